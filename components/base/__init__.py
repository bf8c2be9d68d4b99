"""The base layer: names and label definitions that every other module of ours may import.

Modules here import nothing of ours (tests/test_layers.py checks it), so anything can depend on
them without a cycle: runners -> pipeline -> components -> components.base.
"""
