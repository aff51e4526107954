"""Immutable, versioned artifacts built from the log: Annoy indices and decision tables, their
manifests, listing and removal.
"""
