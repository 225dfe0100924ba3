"""The local stack: embedded Postgres, migrations, demo data and the emulator.

Development and test tooling only; nothing here is deployed.
"""
