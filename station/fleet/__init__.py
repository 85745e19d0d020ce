"""The fleet: stations publish to an MQTT broker; `station fleet watch` and `collect` read it.

topics     the topic names, built and parsed in one place (the README lists them)
link       a paho-mqtt client from [mqtt]: TLS, credentials, backoff, faults in one line each
payloads   what is published: a port, an event, a record (and how a collector checks one)
outbox     the station's records, sent one at a time, deleted only once the broker acknowledged
publisher  the station side: ports, events, status and key, and the outbox, on one connection
collect    `station fleet collect`: every station's records in one verified SQLite file
watch      `station fleet watch`: every station's ports from the retained topics
"""
