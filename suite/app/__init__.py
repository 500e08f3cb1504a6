"""The application layer: the run pipeline, the grid, the command line.

It sits on top of every other package and is imported by none of them.
"""
