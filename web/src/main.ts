import { createPinia } from 'pinia'
import { createApp } from 'vue'
import App from './App.vue'
import { setupStorePersistence } from './plugins/persistence'
import { buildRouter } from './router'
import './style.css'

const app = createApp(App)
const pinia = createPinia()
app.use(pinia)
setupStorePersistence()
app.use(buildRouter())
app.mount('#app')
