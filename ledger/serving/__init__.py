"""What serves: one pointer per model to an artifact, switched atomically under a lock, and
opening what it points to.
"""
