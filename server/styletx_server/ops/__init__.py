"""Running the service: the assembly of every room (`app`), settings (`config`, `env`), health,
devices and signals. Only `__main__` imports this room's assembly."""
