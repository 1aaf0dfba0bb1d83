// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title PerReceiptBaseline: the per-receipt alternative OrbEscrow is measured against
/// @notice One signed receipt per request: each costs one ecrecover and one
/// storage write (the receipt's id marked spent, so it cannot be replayed),
/// plus its calldata. bench/gas.py measures it beside OrbEscrow's cumulative
/// vouchers. It pays nothing out: a real per-receipt escrow would cost more.
contract PerReceiptBaseline {
    /// @notice receipt digest => spent
    mapping(bytes32 => bool) public spent;
    /// @notice total receipts accepted per host (one more warm write per call, not per receipt)
    mapping(address => uint256) public served;

    error BadReceipt(uint256 index);

    /// @param digests one digest per request (the receipt's hash)
    /// @param vs,rs,ss the signer's signature of each digest
    /// @param signer the expected signer
    function claimReceipts(
        address host,
        address signer,
        bytes32[] calldata digests,
        uint8[] calldata vs,
        bytes32[] calldata rs,
        bytes32[] calldata ss
    ) external {
        uint256 n = digests.length;
        for (uint256 i = 0; i < n; ++i) {
            bytes32 d = digests[i];
            if (spent[d] || ecrecover(d, vs[i], rs[i], ss[i]) != signer) revert BadReceipt(i);
            spent[d] = true;
        }
        served[host] += n;
    }
}
