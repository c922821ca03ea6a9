"""windflow: bring a system of services up in the right order and keep it up."""

__version__ = "0.1.0"
