"""The local stack: embedded Postgres, migrations, demo data, generated media,
the CDN and R2 stand-ins and the emulator.

Development and test tooling only; nothing here is deployed.
"""
