"""The contract layer: registries, data types, errors, seeding, the model guard, torch and I/O helpers.

Every other package of saliencybench imports from here; ``core`` imports nothing else of the
package (``tests/unit/core/test_layering.py`` walks the imports and fails on a back edge).
"""
