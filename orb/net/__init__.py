"""
The Twisted wire side that both daemon roles share: the protocol adapter,
key-bound TLS, the session table and its dispatch, dialling, address
gossip and the address book. Roles compose these; none subclasses them.
"""
