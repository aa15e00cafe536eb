// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IReleaseRegistry} from "../interfaces/IReleaseRegistry.sol";

/// @notice The roles of the consortium. No account holds AccessControl's DEFAULT_ADMIN_ROLE: roles are
/// granted by governance (cross-organisation roles) or by a steward (APPROVER in its organisation).
library Roles {
    bytes32 internal constant REGISTRAR = keccak256("REGISTRAR_ROLE");
    bytes32 internal constant APPROVER = keccak256("APPROVER_ROLE");
    bytes32 internal constant DEPLOYER = keccak256("DEPLOYER_ROLE");
    bytes32 internal constant RESPONDER = keccak256("RESPONDER_ROLE");
    bytes32 internal constant ATTESTOR = keccak256("ATTESTOR_ROLE");

    /// @dev The AccessControl role id of `role` for one scope (a service or an attestation type);
    /// scope 0 (everywhere) is the role itself.
    function id(bytes32 role, bytes32 scopeKey) internal pure returns (bytes32) {
        return scopeKey == 0 ? role : keccak256(abi.encode(role, scopeKey));
    }
}

/// @notice How names become storage keys; see IReleaseRegistry for the keys' definitions.
library Keys {
    uint256 internal constant MAX_NAME_LENGTH = 64;

    /// @dev Hashes a service, environment, version or attestation type name after checking it is
    /// 1..64 bytes long.
    function name(string memory value) internal pure returns (bytes32) {
        uint256 length = bytes(value).length;
        if (length == 0 || length > MAX_NAME_LENGTH) revert IReleaseRegistry.InvalidName(value);
        return keccak256(bytes(value));
    }

    /// @dev `name`, except that "" is scope 0 (everywhere).
    function scope(string memory value) internal pure returns (bytes32) {
        return bytes(value).length == 0 ? bytes32(0) : name(value);
    }

    function artifactId(bytes32 serviceKey, bytes32 digest) internal pure returns (bytes32) {
        return keccak256(abi.encode(serviceKey, digest));
    }

    function target(bytes32 serviceKey, bytes32 environmentKey) internal pure returns (bytes32) {
        return keccak256(abi.encode(serviceKey, environmentKey));
    }

    function release(bytes32 artifactId_, bytes32 target_) internal pure returns (bytes32) {
        return keccak256(abi.encode(artifactId_, target_));
    }
}

/// @notice Sets of organisations kept as bitmasks: bit `org` is set for each organisation (ids 1..255,
/// so bit 0 is never set and a count fits a uint8).
library OrgSet {
    /// @dev How many organisations the set holds (one loop pass per set bit). Unchecked: at most 255
    /// bits are set, and `set - 1` runs only while set != 0.
    function count(uint256 set) internal pure returns (uint8 organisations) {
        unchecked {
            for (; set != 0; set &= set - 1) ++organisations;
        }
    }
}
