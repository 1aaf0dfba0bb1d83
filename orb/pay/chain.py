# -*- test-case-name: tests.test_pay_chain -*-
"""
The embedded default chain: eth-tester on py-evm, in this process, served
over JSON-RPC on loopback so that every daemon of a devnet shares it.

``twistd -n orb-chain --data-dir D`` (see :mod:`orb.pay.tap`) runs it. A
POST of a JSON-RPC 2.0 request (or a batch) to ``/`` is answered from an
in-process web3 ``EthereumTesterProvider``; ``GET /orb/escrow`` says where
OrbEscrow is deployed. Clients sign their own transactions and send them
with ``eth_sendRawTransaction``: the chain holds dev keys (written to
``D/private/dev-accounts.json``, mode 0600) but does not sign for anyone,
so ``eth_sendTransaction`` and ``eth_sign*`` are not served.

Every call runs on the reactor thread, one at a time. eth-tester is not
thread-safe and a chain orders its transactions anyway; this process serves
nothing else, so a 50 ms transaction delays only other chain calls.

Time: ``evm_increaseTime`` / ``evm_setNextBlockTimestamp`` move the clock
forward (mining a block, as eth-tester's ``time_travel`` does) and
``evm_mine`` mines, the same methods Anvil and Hardhat take, so tests of
the withdrawal delay run the same way against both.

State is in memory: a restarted chain starts again from genesis (the
devnet's chain lives as long as the devnet).
"""

import ast
import json
import os

from twisted.logger import Logger
from twisted.web import resource, server

from orb.identity import private_dir, write_secret

log = Logger()

MAX_REQUEST_BYTES = 1 << 20  # a raw transaction deploying OrbEscrow is ~10 KiB
MAX_BATCH = 100
DEFAULT_ACCOUNTS = 10
DEFAULT_BALANCE_WEI = 10**24  # a million ether per dev account
MAX_ERROR_MESSAGE = 512

# What a client may call. No eth_sendTransaction / eth_sign*: clients sign
# locally. No filters: they are state kept per client, and polling
# eth_getLogs does the same job.
SERVED_METHODS = frozenset({
    "eth_chainId", "net_version", "web3_clientVersion", "eth_syncing", "eth_accounts",
    "eth_blockNumber", "eth_getBlockByNumber", "eth_getBlockByHash",
    "eth_getBalance", "eth_getTransactionCount", "eth_getCode", "eth_getStorageAt",
    "eth_call", "eth_estimateGas", "eth_gasPrice", "eth_maxPriorityFeePerGas", "eth_feeHistory",
    "eth_sendRawTransaction", "eth_getTransactionReceipt", "eth_getTransactionByHash", "eth_getLogs",
    "evm_mine", "evm_snapshot", "evm_revert", "evm_increaseTime", "evm_setNextBlockTimestamp",
})

# JSON-RPC error codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # a transaction refused (nonce, funds, gas): geth's code
EXECUTION_REVERTED = 3  # geth's code; ``data`` holds the revert bytes (custom errors)


class RpcError(Exception):
    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code = code
        self.message = message[:MAX_ERROR_MESSAGE]
        self.data = data

    def as_dict(self):
        err = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def to_rpc(value):
    """eth-tester's Python results as JSON-RPC values: every integer a hex QUANTITY, bytes as 0x hex."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): to_rpc(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_rpc(v) for v in value]
    return str(value)


def _revert_data(exc):
    """The raw revert bytes (0x hex) behind an eth-tester TransactionFailed, if any. web3's provider
    re-raises it as the text "execution reverted: b'...'"; the original, with the bytes, is its
    ``__context__``."""
    seen = 0
    while exc is not None and seen < 8:
        seen += 1
        arg = exc.args[0] if exc.args else None
        while isinstance(arg, Exception) and arg.args:
            arg = arg.args[0]
        if isinstance(arg, str):
            text = arg.removeprefix("execution reverted: ")
            if text.startswith(("b'", 'b"')) and len(text) < 64 * 1024:
                try:
                    arg = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    arg = None
        if isinstance(arg, (bytes, bytearray)):
            return "0x" + bytes(arg).hex()
        exc = exc.__cause__ or exc.__context__
    return None


def _quantity(value, what):
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise RpcError(INVALID_PARAMS, f"{what} must be a hex quantity")


class Chain:
    """
    One in-memory chain and the JSON-RPC dispatch over it (no I/O: ``handle(doc) -> doc``).

    ``keys`` are the dev accounts' private keys (32 bytes each), funded at genesis.
    """

    def __init__(self, keys, balance_wei=DEFAULT_BALANCE_WEI):
        from eth_keys import keys as ek
        from eth_tester import EthereumTester, PyEVMBackend
        from eth_tester.backends.pyevm.main import generate_genesis_state_for_keys
        from web3 import EthereumTesterProvider, Web3

        self.keys = [ek.PrivateKey(k) for k in keys]
        state = dict(generate_genesis_state_for_keys(self.keys, overrides={"balance": balance_wei}))
        backend = PyEVMBackend(genesis_state=state)
        backend.account_keys = tuple(self.keys)  # eth_accounts lists ours, not eth-tester's well-known keys
        self.tester = EthereumTester(backend)
        self.provider = EthereumTesterProvider(self.tester)
        self.web3 = Web3(self.provider, middleware=[])
        # The provider's own middleware (JSON-RPC shaped requests in, camelCase results out),
        # and nothing of web3's client-side formatting.
        self._request = self.provider.request_func(self.web3, self.web3.middleware_onion)
        self.chain_id = self.tester.backend.chain.chain_id
        self.escrow = None  # set once OrbEscrow is deployed: {"address": ..., ...}

    @property
    def addresses(self):
        return [k.public_key.to_checksum_address() for k in self.keys]

    # --- JSON-RPC ---------------------------------------------------------------------

    def handle_body(self, body):
        """Bytes of a request (or batch) in; the JSON document to answer (None: nothing to answer)."""
        from orb.protocol.federation import MAX_JSON_DEPTH, json_depth

        if json_depth(bytes(body)) > MAX_JSON_DEPTH:  # py-evm raised the recursion limit: json.loads would crash
            return {"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": "nested too deep"}}
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return {"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": "not JSON"}}
        if isinstance(doc, list):
            if not doc or len(doc) > MAX_BATCH:
                return {"jsonrpc": "2.0", "id": None,
                        "error": {"code": INVALID_REQUEST, "message": f"a batch holds 1 to {MAX_BATCH} requests"}}
            answers = [a for a in (self.handle(d) for d in doc) if a is not None]
            return answers or None
        return self.handle(doc)

    def handle(self, doc):
        """One JSON-RPC request object in, its response object out (None for a notification)."""
        if not isinstance(doc, dict) or doc.get("jsonrpc") != "2.0" or not isinstance(doc.get("method"), str):
            return {"jsonrpc": "2.0", "id": None, "error": {"code": INVALID_REQUEST, "message": "not a JSON-RPC 2.0 request"}}
        rid = doc.get("id")
        if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (int, str))):
            rid = None
        params = doc.get("params", [])
        try:
            if not isinstance(params, list):
                raise RpcError(INVALID_PARAMS, "params must be an array")
            result = self.call(doc["method"], params)
        except RpcError as e:
            answer = {"jsonrpc": "2.0", "id": rid, "error": e.as_dict()}
        else:
            answer = {"jsonrpc": "2.0", "id": rid, "result": result}
        return answer if "id" in doc else None

    def call(self, method, params):
        """Run one method; its JSON-RPC result, or RpcError."""
        if method not in SERVED_METHODS:
            raise RpcError(METHOD_NOT_FOUND, f"method {method[:64]!r} is not served by the embedded chain")
        if method == "evm_increaseTime":
            seconds = _quantity(params[0] if params else None, "seconds")
            return to_rpc(self.increase_time(seconds))
        if method == "evm_setNextBlockTimestamp":
            self.time_travel(_quantity(params[0] if params else None, "timestamp"))
            return None
        if method == "evm_mine":
            return to_rpc(list(self.tester.mine_blocks(1)))
        return self._provider_call(method, params)

    def _provider_call(self, method, params):
        from eth_tester.exceptions import TransactionFailed, ValidationError
        from web3.exceptions import ContractLogicError, Web3Exception

        try:
            response = self._request(method, params)
        except TransactionFailed as e:
            raise RpcError(EXECUTION_REVERTED, "execution reverted", _revert_data(e)) from None
        except ContractLogicError as e:  # panics and CCIP lookups, already decoded by web3
            data = e.data if isinstance(e.data, str) else None
            raise RpcError(EXECUTION_REVERTED, f"execution reverted: {e.message or ''}", data) from None
        except (ValidationError, ValueError, TypeError, KeyError, IndexError, Web3Exception) as e:
            raise RpcError(SERVER_ERROR if method == "eth_sendRawTransaction" else INVALID_PARAMS,
                           f"{type(e).__name__}: {e}") from None
        except Exception as e:
            # py-evm raises its own exception types on malformed input (an unknown transaction
            # type, bad RLP): the client's fault, answered and logged in one bounded line.
            log.info("chain call {method} refused: {error}", method=method, error=repr(e)[:200])
            raise RpcError(SERVER_ERROR, f"{type(e).__name__}: {e}") from None
        if "error" in response:
            err = response["error"]
            raise RpcError(err.get("code", INTERNAL_ERROR), str(err.get("message", "")))
        return to_rpc(response.get("result"))

    # --- time ---------------------------------------------------------------------------

    def pending_timestamp(self):
        return self.tester.get_block_by_number("pending")["timestamp"]

    def time_travel(self, timestamp):
        """Mine a block at ``timestamp`` (later than the pending block's)."""
        from eth_tester.exceptions import ValidationError

        try:
            self.tester.time_travel(timestamp)
        except ValidationError as e:
            raise RpcError(INVALID_PARAMS, f"cannot travel to {timestamp}: {e}") from None

    def increase_time(self, seconds):
        if seconds < 0 or seconds > 100 * 365 * 86400:
            raise RpcError(INVALID_PARAMS, "seconds must be from 0 to 100 years")
        if seconds:
            self.time_travel(self.pending_timestamp() + seconds)
        return seconds


# --- HTTP ----------------------------------------------------------------------------------------


class BoundedRequest(server.Request):
    """A request whose body may not exceed MAX_REQUEST_BYTES: refused with 413 before it is buffered."""

    max_body_bytes = MAX_REQUEST_BYTES
    _body_seen = 0
    _refused = False

    def gotLength(self, length):
        if length is not None and length > self.max_body_bytes:
            self._refuse()
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._body_seen += len(data)
        if self._body_seen > self.max_body_bytes:  # chunked bodies have no Content-Length to check
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self):
        if not self._refused:
            self._refused = True
            body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
                "code": INVALID_REQUEST, "message": f"request over {self.max_body_bytes} bytes"}}).encode()
            self.channel.transport.write(
                b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            self.channel.transport.loseConnection()

    def requestReceived(self, command, path, version):
        if self._refused:
            return
        super().requestReceived(command, path, version)


def _json_response(request, code, doc):
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(doc, sort_keys=True).encode()


class RpcResource(resource.Resource):
    """``POST /``: JSON-RPC. ``GET /orb/escrow``: where OrbEscrow is. ``GET /orb/status``: chain id and head."""

    isLeaf = True

    def __init__(self, chain):
        super().__init__()
        self.chain = chain

    def render_POST(self, request):
        if request.postpath not in ([], [b""]):
            return _json_response(request, 404, {"error": "JSON-RPC is served at /"})
        body = request.content.read(MAX_REQUEST_BYTES + 1)
        answer = self.chain.handle_body(body)
        if answer is None:
            request.setResponseCode(204)
            return b""
        return _json_response(request, 200, answer)

    def render_GET(self, request):
        if request.postpath == [b"orb", b"escrow"]:
            if self.chain.escrow is None:
                return _json_response(request, 404, {"error": "OrbEscrow is not deployed on this chain",
                                                     "chain_id": self.chain.chain_id})
            return _json_response(request, 200, {"chain_id": self.chain.chain_id, **self.chain.escrow})
        if request.postpath == [b"orb", b"status"]:
            return _json_response(request, 200, {
                "chain_id": self.chain.chain_id, "block": self.chain.tester.get_block_by_number("latest")["number"],
                "escrow": (self.chain.escrow or {}).get("address"), "accounts": self.chain.addresses})
        return _json_response(request, 404, {"error": "POST JSON-RPC to /; GET /orb/escrow or /orb/status"})


def make_site(chain):
    site = server.Site(RpcResource(chain))
    site.requestFactory = BoundedRequest
    site.displayTracebacks = False
    site.timeOut = 60
    site.log = lambda request: None  # no access log: a polling client would fill it
    return site


# --- dev accounts on disk ------------------------------------------------------------------------


def write_private_json(path, doc):
    """Write ``doc`` to ``path`` mode 0600 (its dir ``private/``, 0700), replacing it atomically."""
    private_dir(os.path.dirname(os.path.dirname(path)))
    write_secret(path, json.dumps(doc, indent=2, sort_keys=True).encode())


def dev_keys(count):
    """``count`` fresh random private keys (a devnet's chain has its own, never well-known ones)."""
    from eth_keys import keys as ek

    out = []
    while len(out) < count:
        raw = os.urandom(32)
        try:
            ek.PrivateKey(raw)
        except Exception:  # out of the curve's range: astronomically rare
            continue
        out.append(raw)
    return out


def load_dev_accounts(data_dir):
    """The dev accounts an orb-chain wrote: a list of {"address", "private_key"} (0x hex)."""
    with open(os.path.join(data_dir, "private", "dev-accounts.json")) as f:
        return json.load(f)["accounts"]
