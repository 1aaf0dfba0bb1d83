# -*- test-case-name: tests.test_cli_function -*-
"""
The owner key: the Ed25519 key that signs an owner's deploys (RFC 9.8)
and, later, names. PEM PKCS#8 in a file of mode 0600, in a directory of
mode 0700; never printed or logged (only the public key is shown).
"""

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orb.identity import NodeKey, create_secret


class OwnerKeyError(Exception):
    """The key file is missing, unsafe or unusable; the message says which and the fix."""


class KeyExists(OwnerKeyError):
    """There is a key at that path already."""


def create_owner_key(path):
    """Make a fresh owner key at ``path`` (0600, parent made 0700); refuse to overwrite anything there."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700)
    key = NodeKey.generate()
    pem = key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    try:
        create_secret(path, pem)
    except FileExistsError:
        raise KeyExists(f"{path} exists already: orb keygen never overwrites a key (it may own deployed "
                        f"functions); move it away first, or pass --key NEW-PATH") from None
    return key


def load_owner_key(path):
    """The owner key at ``path``; refuses a file others can read, as ssh does."""
    path = os.path.abspath(path)
    try:
        info = os.stat(path)
        with open(path, "rb") as f:
            raw = f.read(64 * 1024)
    except FileNotFoundError:
        raise OwnerKeyError(f"{path} does not exist: run `orb keygen` (or pass --key PATH)") from None
    except OSError as e:
        raise OwnerKeyError(f"cannot read {path}: {e.strerror}") from None
    if info.st_mode & 0o077:
        raise OwnerKeyError(f"{path} is readable by others (mode {info.st_mode & 0o777:04o}): chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError):
        raise OwnerKeyError(f"{path} is not an unencrypted PEM private key: make one with `orb keygen --key NEW-PATH`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise OwnerKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key: make one with `orb keygen`")
    return NodeKey(key)
