"""ORB: a decentralized Function-as-a-Service network."""
__version__ = "0.1.0"
