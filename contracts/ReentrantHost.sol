// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ReentrantHost: a hostile host for tests/test_contract.py
/// @notice When paid, it calls `target` once with the armed calldata (for
/// example the same claim again), and records whether that call succeeded
/// and what it returned. It also refuses ether when told to, then accepts.
contract ReentrantHost {
    address public target;
    bytes public payload;
    bool public armed;
    bool public reentered;
    bool public innerOk;
    bytes public innerReturn;
    uint256 public received;
    bool public refuse;

    function arm(address target_, bytes calldata payload_) external {
        target = target_;
        payload = payload_;
        armed = true;
    }

    function setRefuse(bool refuse_) external {
        refuse = refuse_;
    }

    /// @notice Call `target_` with `data` (e.g. withdrawCredit) as this contract.
    function poke(address target_, bytes calldata data) external returns (bool ok, bytes memory ret) {
        (ok, ret) = target_.call(data);
        require(ok, "poke failed");
    }

    receive() external payable {
        if (refuse) revert("no ether");
        received += msg.value;
        if (armed) {
            armed = false;
            reentered = true;
            (innerOk, innerReturn) = target.call(payload);
        }
    }
}
