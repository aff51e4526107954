"""The event contract: the five event types, their Avro schemas, the wire format, and the rules
every event must follow.
"""
