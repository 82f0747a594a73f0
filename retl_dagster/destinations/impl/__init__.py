"""One package per destination API, each laid out alike: `config.py` (its pydantic options),
`client.py` (the Destination), `exceptions.py` (its errors), and `api.py` / `normalize.py` where
it needs them. Nothing here is imported until `destinations.registry` asks for a type."""
