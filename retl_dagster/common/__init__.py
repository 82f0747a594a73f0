"""The ground floor everything stands on: settings (where things are) and value encoding.

It imports nothing else of the project; the destinations, the engine, the components and the CLI
all import it.
"""
