# -*- test-case-name: tests.test_pay_tracker -*-
"""
What a daemon needs to take part in payments, opened once at start: the
escrow's EIP-712 domain (asked of the chain: one blocking JSON-RPC round
trip, before the daemon serves anything), and keys kept 0600 in its data
dir (the tracker's voucher-signing key under ``private/``; a host's payout
wallet where ``--wallet`` says).
"""

from __future__ import annotations

import os

import attrs

from orb.pay import client, wallet
from orb.pay.voucher import Domain

SIGNER_KEY_NAME = "eth-signer.key"


@attrs.frozen
class ChainConfig:
    """--eth-rpc and --escrow (None: asked of the embedded chain at ``/orb/escrow``)."""

    eth_rpc: str
    escrow: str | None = None
    timeout_s: float = client.DEFAULT_TIMEOUT_S


def open_chain(config):
    """(web3, Domain, escrow address) for ``config``. Blocking; raises client.ChainUnreachable / NoEscrow."""
    w3 = client.connect(config.eth_rpc, timeout_s=config.timeout_s)
    escrow = config.escrow or client.escrow_address(config.eth_rpc, timeout_s=config.timeout_s)
    return w3, Domain(chain_id=client.chain_id(w3, config.eth_rpc), contract=escrow), escrow


def load_or_create_key(path):
    """The LocalAccount in ``path`` (mode 0600), made on first use. Never printed or logged."""
    if not os.path.exists(path):
        try:
            return wallet.create(path)
        except wallet.WalletExists:
            pass  # made meanwhile
    return wallet.load(path)


def signer_key_path(data_dir):
    return os.path.join(data_dir, "private", SIGNER_KEY_NAME)
