"""`make bench`: housekeeper against its peers and the physical limit, side by side.

Benchmark tooling only; nothing here is deployed. The product is reached through
its public entry points alone: `python -m housekeeper invoke ...` in a child
process and the functions-framework emulator.
"""
