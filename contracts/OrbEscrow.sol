// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title OrbEscrow: pay ORB hosts per request served, from cumulative signed vouchers
/// @notice An owner funds a function (fid) with ether and prices. The trackers
/// that mediate calls (or caller keys the owner authorized) sign EIP-712
/// vouchers carrying *cumulative* counters for a (fid, host, signer). A claim
/// pays the difference between the voucher's counters and what was already
/// paid for that triple, so one claim pays for any number of requests at a
/// constant gas cost, and a replayed or older voucher pays 0 by construction
/// (unidirectional payment-channel vouchers, as in Filecoin's payment channels).
/// @dev Design choices (see contracts/README.md):
///  - Stale vouchers (no counter above what was paid) pay 0, change nothing and
///    emit nothing: no state change, no event. A batch never reverts for one.
///  - Prices can only rise while a fid is funded. A lower price goes through
///    requestWithdrawal / withdraw / fund again, so hosts get the whole
///    withdrawal delay to claim at the prices they worked for.
///  - Signers can be added at any time (fund) and removed at once
///    (removeSigners): a leaked tracker key must be stoppable now; hosts carry
///    the risk of unclaimed vouchers from a removed signer, and claim often.
///  - Payouts follow checks-effects-interactions: every counter and balance is
///    written before any ether moves, and claimBatch sends one transfer per
///    distinct host after all its effects. A host whose transfer fails (a
///    contract that rejects ether) is credited instead (pull payment,
///    withdrawCredit), so one bad recipient cannot block a batch or a
///    withdrawal. No reentrancy lock is needed (and none is paid for): a
///    reentrant call sees only settled state.
contract OrbEscrow {
    // ------------------------------------------------------------------ types

    /// @notice A cumulative voucher. `bytes_` is the EIP-712 field `bytes`
    /// (a Solidity keyword cannot name a member).
    struct Voucher {
        bytes32 fid;
        address host;
        address signer;
        uint64 requests;
        uint64 bytes_;
        uint64 epochs;
        uint64 expiry;
    }

    /// @dev Three storage slots; a claim reads all three and writes slot 1.
    struct Fund {
        address owner; //          slot 0
        uint64 withdrawableAt; //  slot 0 (0: no withdrawal requested)
        uint32 signerGen; //       slot 0 (bumped on withdraw: a new funding starts with no signers)
        uint128 balance; //        slot 1
        uint128 pricePerRequest; // slot 1
        uint128 pricePerEpoch; //  slot 2
        uint128 pricePerMiB; //    slot 2
    }

    /// @dev What was paid for one (fid, host, signer): one slot.
    struct Paid {
        uint64 requests;
        uint64 bytes_;
        uint64 epochs;
    }

    // -------------------------------------------------------------- constants

    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    /// @notice The EIP-712 type hash of a voucher.
    bytes32 public constant VOUCHER_TYPEHASH = keccak256(
        "Voucher(bytes32 fid,address host,address signer,uint64 requests,uint64 bytes,uint64 epochs,uint64 expiry)"
    );
    bytes32 private constant _NAME_HASH = keccak256("OrbEscrow");
    bytes32 private constant _VERSION_HASH = keccak256("1");
    /// @dev secp256k1n / 2: a larger s is the malleable twin of a valid signature.
    uint256 private constant _HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    // ------------------------------------------------------------------ state

    /// @notice Seconds between requestWithdrawal and the earliest withdraw.
    uint64 public immutable withdrawDelay;
    uint256 private immutable _cachedChainId;
    bytes32 private immutable _cachedDomainSeparator;

    mapping(bytes32 => Fund) private _funds;
    mapping(bytes32 => mapping(uint32 => mapping(address => bool))) private _signers;
    mapping(bytes32 => mapping(address => mapping(address => Paid))) private _paid;
    /// @notice Ether owed to an address whose transfer failed; withdrawCredit pays it.
    mapping(address => uint256) public credit;

    // ----------------------------------------------------------------- events

    /// @notice A fid got its owner and first deposit.
    event Funded(bytes32 indexed fid, address indexed owner, uint256 amount, uint256 balance);
    /// @notice The owner added ether to a funded fid.
    event ToppedUp(bytes32 indexed fid, uint256 amount, uint256 balance);
    /// @notice The prices were set (first funding) or raised.
    event PricesChanged(bytes32 indexed fid, uint256 pricePerRequest, uint256 pricePerEpoch, uint256 pricePerMiB);
    /// @notice Signers were accepted (true) or removed (false).
    event SignersChanged(bytes32 indexed fid, address[] signers, bool accepted);
    /// @notice The owner asked for its unspent balance; claims go on until withdrawableAt and after, until withdraw.
    event WithdrawalRequested(bytes32 indexed fid, uint64 withdrawableAt);
    /// @notice The owner cancelled a pending withdrawal.
    event WithdrawalCancelled(bytes32 indexed fid);
    /// @notice The unspent balance went to the owner; the fid is unfunded.
    event Withdrawn(bytes32 indexed fid, address indexed owner, uint256 amount);
    /// @notice A voucher paid `amount` wei to `host`; requests/bytes_/epochs are the new paid counters.
    event Claimed(
        bytes32 indexed fid,
        address indexed host,
        address indexed signer,
        uint64 requests,
        uint64 bytes_,
        uint64 epochs,
        uint256 amount
    );
    /// @notice A claim owed more than the fid's balance: `unpaid` wei were not paid (the counters still advanced).
    event Underpaid(bytes32 indexed fid, address indexed host, address indexed signer, uint256 unpaid);
    /// @notice A transfer to `to` failed; the amount waits in `credit`.
    event CreditDeferred(address indexed to, uint256 amount);
    /// @notice `to` took its credit.
    event CreditWithdrawn(address indexed to, uint256 amount);
    /// @notice Entry `index` of a claimBatch was refused for `reason` (the selector of the error claim raises).
    event ClaimSkipped(uint256 index, bytes4 reason);

    // ----------------------------------------------------------------- errors

    /// @notice The fid has no owner (never funded, or withdrawn).
    error Unfunded(bytes32 fid);
    /// @notice Only the fid's owner may do this.
    error NotOwner(bytes32 fid, address owner);
    /// @notice The voucher's expiry (unix seconds) has passed.
    error Expired(uint64 expiry);
    /// @notice The signature is malformed, malleable (high s) or not by voucher.signer.
    error BadSignature();
    /// @notice The owner does not accept this signer for this fid.
    error SignerNotAccepted(bytes32 fid, address signer);
    /// @notice A voucher must name a host.
    error ZeroHost();
    /// @notice Prices may only rise while funded; withdraw and fund again to lower them.
    error PriceDecrease(bytes32 fid);
    /// @notice An amount or price does not fit its 128-bit slot.
    error ValueTooLarge(uint256 value);
    /// @notice withdraw before requestWithdrawal.
    error WithdrawalNotRequested(bytes32 fid);
    /// @notice withdraw before the delay ran out.
    error WithdrawalTooEarly(bytes32 fid, uint64 withdrawableAt);
    /// @notice vouchers and signatures differ in number.
    error LengthMismatch();
    /// @notice withdrawCredit with nothing owed.
    error NoCredit();
    /// @notice A credit payout failed.
    error TransferFailed();

    /// @param withdrawDelay_ seconds an owner waits between requestWithdrawal and withdraw.
    constructor(uint64 withdrawDelay_) {
        withdrawDelay = withdrawDelay_;
        _cachedChainId = block.chainid;
        _cachedDomainSeparator = _buildDomainSeparator();
    }

    // ---------------------------------------------------------------- funding

    /// @notice Fund a fid. The first caller becomes its owner and sets prices and
    /// signers; later calls (owner only) add ether, raise prices and add signers.
    /// @param fid the SHA-256 digest of the function id
    /// @param pricePerRequest wei per request served
    /// @param pricePerEpoch wei per uptime epoch
    /// @param pricePerMiB wei per 2**20 bytes transferred
    /// @param signers voucher signers to accept (trackers, authorized caller keys)
    function fund(
        bytes32 fid,
        uint256 pricePerRequest,
        uint256 pricePerEpoch,
        uint256 pricePerMiB,
        address[] calldata signers
    ) external payable {
        Fund storage f = _funds[fid];
        uint128 pReq = _to128(pricePerRequest);
        uint128 pEp = _to128(pricePerEpoch);
        uint128 pMiB = _to128(pricePerMiB);
        if (f.owner == address(0)) {
            f.owner = msg.sender;
            f.balance = _to128(msg.value);
            f.pricePerRequest = pReq;
            f.pricePerEpoch = pEp;
            f.pricePerMiB = pMiB;
            emit Funded(fid, msg.sender, msg.value, msg.value);
            emit PricesChanged(fid, pReq, pEp, pMiB);
        } else {
            if (f.owner != msg.sender) revert NotOwner(fid, f.owner);
            if (pReq < f.pricePerRequest || pEp < f.pricePerEpoch || pMiB < f.pricePerMiB) {
                revert PriceDecrease(fid);
            }
            if (msg.value > 0) {
                uint128 balance = _to128(uint256(f.balance) + msg.value);
                f.balance = balance;
                emit ToppedUp(fid, msg.value, balance);
            }
            if (pReq != f.pricePerRequest || pEp != f.pricePerEpoch || pMiB != f.pricePerMiB) {
                f.pricePerRequest = pReq;
                f.pricePerEpoch = pEp;
                f.pricePerMiB = pMiB;
                emit PricesChanged(fid, pReq, pEp, pMiB);
            }
        }
        if (signers.length > 0) {
            uint32 gen = f.signerGen;
            for (uint256 i = 0; i < signers.length; ++i) {
                _signers[fid][gen][signers[i]] = true;
            }
            emit SignersChanged(fid, signers, true);
        }
    }

    /// @notice Add ether to a funded fid (owner only).
    function topUp(bytes32 fid) external payable {
        Fund storage f = _ownedFund(fid);
        uint128 balance = _to128(uint256(f.balance) + msg.value);
        f.balance = balance;
        emit ToppedUp(fid, msg.value, balance);
    }

    /// @notice Stop accepting vouchers from these signers, at once (owner only).
    function removeSigners(bytes32 fid, address[] calldata signers) external {
        Fund storage f = _ownedFund(fid);
        uint32 gen = f.signerGen;
        for (uint256 i = 0; i < signers.length; ++i) {
            _signers[fid][gen][signers[i]] = false;
        }
        emit SignersChanged(fid, signers, false);
    }

    /// @notice Start the withdrawal delay (owner only). Claims stay possible until withdraw runs.
    function requestWithdrawal(bytes32 fid) external {
        Fund storage f = _ownedFund(fid);
        uint64 when = uint64(block.timestamp) + withdrawDelay;
        f.withdrawableAt = when;
        emit WithdrawalRequested(fid, when);
    }

    /// @notice Cancel a pending withdrawal (owner only).
    function cancelWithdrawal(bytes32 fid) external {
        Fund storage f = _ownedFund(fid);
        if (f.withdrawableAt == 0) revert WithdrawalNotRequested(fid);
        f.withdrawableAt = 0;
        emit WithdrawalCancelled(fid);
    }

    /// @notice After the delay, pay the unspent balance to the owner; the fid becomes unfunded
    /// (its signers are forgotten, its paid counters kept, so old vouchers stay worthless).
    function withdraw(bytes32 fid) external {
        Fund storage f = _ownedFund(fid);
        uint64 when = f.withdrawableAt;
        if (when == 0) revert WithdrawalNotRequested(fid);
        if (block.timestamp < when) revert WithdrawalTooEarly(fid, when);
        address owner = f.owner;
        uint256 amount = f.balance;
        // Effects: the whole record is reset, except the signer generation.
        f.owner = address(0);
        f.withdrawableAt = 0;
        f.signerGen += 1;
        f.balance = 0;
        f.pricePerRequest = 0;
        f.pricePerEpoch = 0;
        f.pricePerMiB = 0;
        emit Withdrawn(fid, owner, amount);
        _send(owner, amount);
    }

    /// @notice Take the ether whose direct transfer failed earlier.
    function withdrawCredit() external {
        uint256 amount = credit[msg.sender];
        if (amount == 0) revert NoCredit();
        credit[msg.sender] = 0;
        emit CreditWithdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    // ----------------------------------------------------------------- claims

    /// @notice Pay v.host what v covers beyond what was already paid for (fid, host, signer).
    /// Anyone may submit; the money goes to the host. A stale voucher returns 0 and changes nothing.
    /// @return amount wei paid
    function claim(Voucher calldata v, bytes calldata sig) external returns (uint256 amount) {
        bytes4 err = _check(v, sig);
        if (err != bytes4(0)) _raise(err, v);
        amount = _settle(v);
        if (amount > 0) _send(v.host, amount);
    }

    /// @notice Claim many vouchers (any fids, hosts and signers) in one transaction.
    /// Invalid entries are skipped (ClaimSkipped), stale ones pay 0; each distinct
    /// host is paid once, with the sum of its vouchers, after all the effects.
    /// @return total wei paid over the batch
    function claimBatch(Voucher[] calldata vs, bytes[] calldata sigs) external returns (uint256 total) {
        uint256 n = vs.length;
        if (n != sigs.length) revert LengthMismatch();
        address[] memory hosts = new address[](n);
        uint256[] memory owed = new uint256[](n);
        uint256 nHosts = 0;
        for (uint256 i = 0; i < n; ++i) {
            Voucher calldata v = vs[i];
            bytes4 err = _check(v, sigs[i]);
            if (err != bytes4(0)) {
                emit ClaimSkipped(i, err);
                continue;
            }
            uint256 amount = _settle(v);
            if (amount == 0) continue;
            total += amount;
            // Aggregate per host: batches are small (bounded by block gas), a linear scan is cheapest.
            uint256 j = 0;
            while (j < nHosts && hosts[j] != v.host) ++j;
            if (j == nHosts) {
                hosts[j] = v.host;
                ++nHosts;
            }
            owed[j] += amount;
        }
        for (uint256 j = 0; j < nHosts; ++j) {
            _send(hosts[j], owed[j]);
        }
    }

    // ------------------------------------------------------------------ views

    /// @notice A fid's record: owner (0 when unfunded), balance, prices, withdrawableAt (0: none pending).
    function funds(bytes32 fid)
        external
        view
        returns (
            address owner,
            uint256 balance,
            uint256 pricePerRequest,
            uint256 pricePerEpoch,
            uint256 pricePerMiB,
            uint64 withdrawableAt
        )
    {
        Fund storage f = _funds[fid];
        return (f.owner, f.balance, f.pricePerRequest, f.pricePerEpoch, f.pricePerMiB, f.withdrawableAt);
    }

    /// @notice Whether the owner currently accepts vouchers signed by `signer` for `fid`.
    function isSigner(bytes32 fid, address signer) external view returns (bool) {
        return _signers[fid][_funds[fid].signerGen][signer];
    }

    /// @notice The counters already paid for (fid, host, signer).
    function paid(bytes32 fid, address host, address signer)
        external
        view
        returns (uint64 requests, uint64 bytes_, uint64 epochs)
    {
        Paid storage p = _paid[fid][host][signer];
        return (p.requests, p.bytes_, p.epochs);
    }

    /// @notice The EIP-712 domain separator (name "OrbEscrow", version "1", this chain, this contract).
    function domainSeparator() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedDomainSeparator : _buildDomainSeparator();
    }

    /// @notice The EIP-712 digest a signer signs for `v`.
    function voucherDigest(Voucher calldata v) public view returns (bytes32) {
        bytes32 structHash = keccak256(
            abi.encode(VOUCHER_TYPEHASH, v.fid, v.host, v.signer, v.requests, v.bytes_, v.epochs, v.expiry)
        );
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    // -------------------------------------------------------------- internals

    /// @dev Every check a voucher must pass; returns the selector of the failing error, or 0.
    function _check(Voucher calldata v, bytes calldata sig) private view returns (bytes4) {
        if (_funds[v.fid].owner == address(0)) return Unfunded.selector;
        if (v.host == address(0)) return ZeroHost.selector;
        if (block.timestamp > v.expiry) return Expired.selector;
        if (_recover(voucherDigest(v), sig) != v.signer || v.signer == address(0)) {
            return BadSignature.selector;
        }
        if (!_signers[v.fid][_funds[v.fid].signerGen][v.signer]) return SignerNotAccepted.selector;
        return bytes4(0);
    }

    /// @dev Re-raise a _check result as the named error with its arguments.
    function _raise(bytes4 err, Voucher calldata v) private pure {
        if (err == Unfunded.selector) revert Unfunded(v.fid);
        if (err == ZeroHost.selector) revert ZeroHost();
        if (err == Expired.selector) revert Expired(v.expiry);
        if (err == BadSignature.selector) revert BadSignature();
        revert SignerNotAccepted(v.fid, v.signer);
    }

    /// @dev Effects of a checked voucher: advance the paid counters, debit the balance, emit.
    /// Returns the amount owed to v.host (not yet sent).
    function _settle(Voucher calldata v) private returns (uint256 amount) {
        Paid memory old = _paid[v.fid][v.host][v.signer];
        uint64 dReq = v.requests > old.requests ? v.requests - old.requests : 0;
        uint64 dBytes = v.bytes_ > old.bytes_ ? v.bytes_ - old.bytes_ : 0;
        uint64 dEp = v.epochs > old.epochs ? v.epochs - old.epochs : 0;
        if (dReq == 0 && dBytes == 0 && dEp == 0) return 0; // stale: no state change, no event
        Paid memory now_ = Paid(old.requests + dReq, old.bytes_ + dBytes, old.epochs + dEp);
        _paid[v.fid][v.host][v.signer] = now_;

        Fund storage f = _funds[v.fid];
        // uint64 * uint128 < 2**192: no overflow in any term or in the sum. The slot of the epoch
        // and MiB prices is read only when those counters moved (a cold read is 2,100 gas).
        uint256 owedAmount = uint256(dReq) * f.pricePerRequest;
        if (dBytes != 0) owedAmount += (uint256(dBytes) * f.pricePerMiB) >> 20;
        if (dEp != 0) owedAmount += uint256(dEp) * f.pricePerEpoch;
        uint256 balance = f.balance;
        amount = owedAmount;
        if (amount > balance) {
            amount = balance;
            emit Underpaid(v.fid, v.host, v.signer, owedAmount - balance);
        }
        f.balance = uint128(balance - amount);
        emit Claimed(v.fid, v.host, v.signer, now_.requests, now_.bytes_, now_.epochs, amount);
    }

    /// @dev Interaction last: pay `to`, or credit it if it refuses the ether.
    function _send(address to, uint256 amount) private {
        if (amount == 0) return;
        (bool ok,) = to.call{value: amount}("");
        if (!ok) {
            credit[to] += amount;
            emit CreditDeferred(to, amount);
        }
    }

    /// @dev ecrecover over a 65-byte (r, s, v) signature, refusing high s and v other than 27/28.
    function _recover(bytes32 digest, bytes calldata sig) private pure returns (address) {
        if (sig.length != 65) return address(0);
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := calldataload(sig.offset)
            s := calldataload(add(sig.offset, 32))
            v := byte(0, calldataload(add(sig.offset, 64)))
        }
        if (uint256(s) > _HALF_N) return address(0);
        if (v != 27 && v != 28) return address(0);
        return ecrecover(digest, v, r, s);
    }

    function _ownedFund(bytes32 fid) private view returns (Fund storage f) {
        f = _funds[fid];
        if (f.owner == address(0)) revert Unfunded(fid);
        if (f.owner != msg.sender) revert NotOwner(fid, f.owner);
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, block.chainid, address(this)));
    }

    function _to128(uint256 x) private pure returns (uint128) {
        if (x > type(uint128).max) revert ValueTooLarge(x);
        return uint128(x);
    }
}
