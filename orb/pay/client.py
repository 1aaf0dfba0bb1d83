# -*- test-case-name: tests.test_pay_chain -*-
"""
Talking to a chain: ``connect(url)`` gives a web3 over HTTP JSON-RPC with a
request timeout, for the embedded chain (``twistd orb-chain``) or any node
(``--eth-rpc URL``: Anvil, geth, a provider).

web3's HTTP provider blocks, so code on the reactor thread calls it through
:func:`in_thread` (``deferToThread``); the CLI calls it directly.
"""

import json
import os

DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_TIMEOUT_S = 10.0
MAX_ESCROW_DOC_BYTES = 64 * 1024


class ChainUnreachable(Exception):
    """No JSON-RPC node answered at that URL (refused, timed out, or not JSON-RPC)."""


class NoEscrow(Exception):
    """Where OrbEscrow is deployed is unknown: pass --escrow ADDRESS (or ORB_ESCROW)."""


def default_rpc_url():
    return os.environ.get("ORB_ETH_RPC") or DEFAULT_RPC


def _check_url(url):
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048:
        raise ChainUnreachable(f"{url!r:.100} is not an http:// or https:// JSON-RPC URL")
    return url.rstrip("/")


def connect(url=None, timeout_s=DEFAULT_TIMEOUT_S, check=True):
    """A web3 for the JSON-RPC node at ``url``; with ``check``, ChainUnreachable unless it answers
    eth_chainId now."""
    from web3 import HTTPProvider, Web3

    url = _check_url(url or default_rpc_url())
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout_s}))
    if check:
        chain_id(w3, url)
    return w3


def chain_id(w3, url=""):
    import requests

    try:
        return w3.eth.chain_id
    except (requests.RequestException, OSError) as e:
        raise ChainUnreachable(f"no Ethereum JSON-RPC node answered at {url or 'the chain'} "
                               f"({type(e).__name__}): start one (`twistd -n orb-chain`) or pass --eth-rpc URL") from None
    except ValueError as e:  # not JSON, a JSON-RPC error for eth_chainId
        raise ChainUnreachable(f"{url or 'the chain'} is not an Ethereum JSON-RPC node ({e})") from None


def escrow_address(url=None, timeout_s=DEFAULT_TIMEOUT_S):
    """OrbEscrow's address: $ORB_ESCROW, else what the embedded chain serves at ``GET /orb/escrow``."""
    import urllib.error
    import urllib.request

    from eth_utils import is_address, to_checksum_address

    env = os.environ.get("ORB_ESCROW")
    if env:
        if not is_address(env):
            raise NoEscrow(f"ORB_ESCROW={env!r:.60} is not an address")
        return to_checksum_address(env)
    url = _check_url(url or default_rpc_url())
    try:
        with urllib.request.urlopen(url + "/orb/escrow", timeout=timeout_s) as response:
            doc = json.loads(response.read(MAX_ESCROW_DOC_BYTES))
    except urllib.error.HTTPError as e:
        raise NoEscrow(f"{url} does not say where OrbEscrow is (HTTP {e.code}): pass --escrow ADDRESS") from None
    except (urllib.error.URLError, OSError) as e:
        raise ChainUnreachable(f"no chain answered at {url} ({e})") from None
    except ValueError:
        raise NoEscrow(f"{url}/orb/escrow is not JSON: pass --escrow ADDRESS") from None
    address = doc.get("address") if isinstance(doc, dict) else None
    if not isinstance(address, str) or not is_address(address):
        raise NoEscrow(f"{url}/orb/escrow names no address: pass --escrow ADDRESS")
    return to_checksum_address(address)


def in_thread(fn, *args, **kw):
    """Run a blocking chain call off the reactor thread: a Deferred of its result."""
    from twisted.internet.threads import deferToThread

    return deferToThread(fn, *args, **kw)
