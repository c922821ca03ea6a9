/** Layer of each node in a dependency graph: 0 without dependencies, else one more than its deepest one.
 * Unknown dependencies are ignored; a cycle puts its members after what is known (never loops). */
export function layersOf(nodes: Array<{ id: string; depends_on: string[] }>): Record<string, number> {
  const deps = new Map(nodes.map((n) => [n.id, n.depends_on.filter((d) => d !== n.id)]))
  const layer: Record<string, number> = {}
  const visiting = new Set<string>()
  const visit = (id: string): number => {
    if (id in layer) return layer[id]
    if (visiting.has(id)) return 0
    visiting.add(id)
    const own = (deps.get(id) ?? []).filter((d) => deps.has(d))
    const value = own.length ? Math.max(...own.map(visit)) + 1 : 0
    visiting.delete(id)
    layer[id] = value
    return value
  }
  nodes.forEach((n) => visit(n.id))
  return layer
}
