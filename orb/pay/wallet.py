# -*- test-case-name: tests.test_pay_wallet -*-
"""
The wallet: one Ethereum key in a file of mode 0600 (directory 0700).

With a passphrase the file is an eth-account keystore (v3, scrypt
n=2**18, as geth writes); without one it holds the raw key as ``0x`` and
64 hex digits on one line. Either way the address can be read without the
passphrase (a keystore stores it in clear), so ``orb wallet show`` and
``balance`` never ask for one. The key is never printed or logged; errors
name the file, never its content.
"""

import json
import os
import stat

from eth_utils import to_checksum_address

from orb.identity import create_secret

MAX_WALLET_BYTES = 16 * 1024
MAX_PASSPHRASE_BYTES = 4096
WALLET_NAME = "wallet.json"


class WalletError(Exception):
    """The wallet file is missing, unsafe or unreadable; the message says which and the fix."""


class WalletExists(WalletError):
    """There is a file at that path already."""


class PassphraseRequired(WalletError):
    """The wallet is encrypted and no passphrase was given."""


class BadPassphrase(WalletError):
    """The passphrase does not decrypt the wallet."""


def default_path(orb_home):
    return os.path.join(orb_home, WALLET_NAME)


def read_passphrase_file(path):
    """The first line of ``path`` (without its newline): a passphrase kept out of argv and the environment."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PASSPHRASE_BYTES + 1)
    except OSError as e:
        raise WalletError(f"cannot read the passphrase file {path}: {e.strerror}") from None
    if len(raw) > MAX_PASSPHRASE_BYTES:
        raise WalletError(f"the passphrase file {path} is over {MAX_PASSPHRASE_BYTES} bytes")
    line = raw.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        raise WalletError(f"the passphrase file {path} is empty")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise WalletError(f"the passphrase file {path} is not UTF-8") from None


def create(path, passphrase=None):
    """Make a fresh key at ``path`` (refusing to overwrite anything there): its LocalAccount."""
    from eth_account import Account

    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    account = Account.create()
    if passphrase is not None:
        content = json.dumps(Account.encrypt(account.key, passphrase)).encode()
    else:
        content = ("0x" + bytes(account.key).hex() + "\n").encode()
    try:
        create_secret(path, content)
    except FileExistsError:
        raise WalletExists(f"{path} exists already: a wallet is never overwritten (it may hold ether); "
                           "move it away first, or pass --wallet NEW-PATH") from None
    return account


def _read(path):
    path = os.path.abspath(path)
    try:
        info = os.stat(path)
        with open(path, "rb") as f:
            raw = f.read(MAX_WALLET_BYTES + 1)
    except FileNotFoundError:
        raise WalletError(f"{path} does not exist: run `orb wallet new` (or pass --wallet PATH)") from None
    except OSError as e:
        raise WalletError(f"cannot read {path}: {e.strerror}") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise WalletError(f"{path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 {path}")
    if len(raw) > MAX_WALLET_BYTES:
        raise WalletError(f"{path} is not a wallet (over {MAX_WALLET_BYTES} bytes)")
    text = raw.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            raise WalletError(f"{path} is not a wallet: broken JSON") from None
        if not isinstance(doc, dict) or doc.get("version") != 3 or not isinstance(doc.get("crypto"), dict):
            raise WalletError(f"{path} is not a version 3 keystore")
        return path, doc, None
    hexkey = text[2:] if text.startswith("0x") else text
    if len(hexkey) != 64:
        raise WalletError(f"{path} is not a wallet: neither a keystore nor a 0x-hex private key")
    try:
        return path, None, bytes.fromhex(hexkey)
    except ValueError:
        raise WalletError(f"{path} is not a wallet: neither a keystore nor a 0x-hex private key") from None


def info(path):
    """{"path", "address", "encrypted"} without decrypting anything."""
    from eth_account import Account

    path, keystore, raw = _read(path)
    if keystore is not None:
        address = keystore.get("address")
        if not isinstance(address, str) or len(address.removeprefix("0x")) != 40:
            raise WalletError(f"{path}: the keystore has no address")
        return {"path": path, "address": to_checksum_address("0x" + address.removeprefix("0x")), "encrypted": True}
    try:
        address = Account.from_key(raw).address
    except Exception:
        raise WalletError(f"{path} holds no valid secp256k1 private key") from None
    return {"path": path, "address": address, "encrypted": False}


def load(path, passphrase=None):
    """The wallet's LocalAccount (decrypting a keystore with ``passphrase``)."""
    from eth_account import Account

    path, keystore, raw = _read(path)
    if keystore is not None:
        if passphrase is None:
            raise PassphraseRequired(f"{path} is encrypted: pass --passphrase-file FILE")
        try:
            raw = Account.decrypt(keystore, passphrase)
        except ValueError as e:
            if "MAC mismatch" in str(e):
                raise BadPassphrase(f"the passphrase does not open {path}") from None
            raise WalletError(f"{path} is a keystore this version cannot read") from None
        except Exception:
            raise WalletError(f"{path} is a keystore this version cannot read") from None
    try:
        return Account.from_key(raw)
    except Exception:
        raise WalletError(f"{path} holds no valid secp256k1 private key") from None
