//! What a mesh peer's credential bounds in its cluster's RPC (`docs/AUTH.md`, "Permissions";
//! issue 12), as a bridge bounds a child link's (`bridge::rpc`): the provider records the
//! peer stores at this node need `register` of their procedure, the calls it routes to this
//! node's providers need `call` of theirs, and this node's lookups hand a peer only calls of
//! procedures it may register (its own store holds its records whatever we refused, and it
//! answers `find_value` from it). Pure: the mesh link ([`super::super::mesh`]) and the
//! lookups ([`super::lookup`]) apply it, count it and answer for it. A peer without a grant
//! (an open realm, or a credential that restricts nothing) is never checked.

use crate::auth::{Action, Grant};
use crate::wire::{ErrorCode, NodeId, RpcError, Store};

/// Why a mesh peer's `store` is refused: answered with an `error` frame of `code` and
/// `message` carrying the store's correlation id, counted in
/// `macula_dht_store_refused_total{reason}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRefusal {
    /// The `reason` label ([`crate::metrics::rpc::STORE_REFUSALS`]): `invalid` or `denied`
    /// (`denied` is counted in `macula_permission_denied_total{action="register"}` too).
    pub reason: &'static str,
    /// `MALFORMED_BODY` (`invalid`) or `PERMISSION_DENIED` (`denied`).
    pub code: ErrorCode,
    /// The error frame's text.
    pub message: String,
}

/// Checks a `store` that mesh peer `peer`, whose credential grants `grant`, sent to a node of
/// realm `realm`, in the bridge's order: the publisher must be the peer (`invalid`, as the
/// DHT itself refuses it, PROTOCOL §5.18); a withdrawal (`ttl_ms` = 0) is then always taken;
/// a `name` must be the procedure of the record's `key` (`invalid`); `register` of the name
/// must be permitted (`denied`; a denial is written to the audit log by [`Grant::check`]),
/// and a store without a name is refused (`denied`) unless `register` is open. The TTL and
/// the store's bounds are the DHT's own checks, after this one.
pub fn check_store(
    grant: &Grant,
    realm: &str,
    peer: &NodeId,
    s: &Store,
) -> Result<(), StoreRefusal> {
    let refuse = |reason, code, message: String| {
        Err(StoreRefusal {
            reason,
            code,
            message,
        })
    };
    if s.publisher != *peer {
        let msg = "a peer stores only the records it publishes itself".to_string();
        return refuse("invalid", ErrorCode::MalformedBody, msg);
    }
    if s.ttl_ms == 0 {
        return Ok(());
    }
    let action = Action::Register;
    let checked = match s.name.as_deref() {
        Some(n) if crate::rpc::procedure_key(realm, n) != s.key => {
            let msg = "the name is not the key's procedure".to_string();
            return refuse("invalid", ErrorCode::MalformedBody, msg);
        }
        Some(n) => grant.check(action, n),
        None if grant.permissions.rule(action).is_open() => Ok(()),
        None => Err("permission denied: register needs the procedure's name".into()),
    };
    match checked {
        Ok(()) => Ok(()),
        Err(msg) => refuse("denied", ErrorCode::PermissionDenied, msg),
    }
}

/// Checks a `call` a mesh peer whose credential grants `grant` routes to this node: `call` of
/// its procedure must be permitted. `Err`: the `reply` error `PERMISSION_DENIED` (RPC code
/// 10) naming the action and procedure; the denial is written to the audit log by
/// [`Grant::check`] (the caller counts it).
pub fn check_call(grant: &Grant, procedure: &str) -> Result<(), RpcError> {
    grant
        .check(Action::Call, procedure)
        .map_err(|m| RpcError::new(RpcError::PERMISSION_DENIED, m))
}

/// Whether a peer whose credential grants `grant` may be handed calls of `procedure`: it may
/// register it. Not audited nor counted: a lookup reads what the peer's refused `store` or
/// gossiped `$rpc/<procedure>` left elsewhere, and that refusal was.
pub fn may_provide(grant: &Grant, procedure: &str) -> bool {
    grant.permissions.permits(Action::Register, procedure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Permissions, Role};

    const REALM: &str = "io.macula";
    const PEER: NodeId = [7; 32];

    /// A grant denying `register` and `call` of `billing.*`, or allowing `register` of
    /// `svc.**` only (`allow_only`).
    fn grant(allow_only: bool) -> Grant {
        let mut p = Permissions::default();
        if allow_only {
            p.add(Action::Register, false, "svc.**").unwrap();
        } else {
            p.add(Action::Register, true, "billing.*").unwrap();
            p.add(Action::Call, true, "billing.*").unwrap();
        }
        Grant {
            permissions: p,
            credential_id: [1; 16],
            name: "node-b".into(),
            realm: REALM.into(),
            role: Role::Node,
            remote: "127.0.0.3:4433".parse().unwrap(),
        }
    }

    fn store(name: Option<&str>, key_of: &str, ttl_ms: u32, publisher: NodeId) -> Store {
        Store {
            correlation_id: 9,
            key: crate::rpc::procedure_key(REALM, key_of),
            value: bytes::Bytes::from_static(b"record"),
            ttl_ms,
            publisher,
            name: name.map(Into::into),
        }
    }

    fn refused(r: Result<(), StoreRefusal>) -> (&'static str, ErrorCode) {
        let e = r.expect_err("refused");
        (e.reason, e.code)
    }

    #[test]
    fn a_store_needs_register_of_its_named_procedure() {
        let g = grant(false);
        let ok = store(Some("svc.echo"), "svc.echo", 60_000, PEER);
        assert_eq!(check_store(&g, REALM, &PEER, &ok), Ok(()));
        let denied = store(Some("billing.pay"), "billing.pay", 60_000, PEER);
        let e = check_store(&g, REALM, &PEER, &denied).unwrap_err();
        assert_eq!((e.reason, e.code), ("denied", ErrorCode::PermissionDenied));
        assert!(e.message.contains("register") && e.message.contains("billing.pay"));
        // Withdrawals are always taken, named or not.
        for name in [Some("billing.pay"), None] {
            let w = store(name, "billing.pay", 0, PEER);
            assert_eq!(check_store(&g, REALM, &PEER, &w), Ok(()));
        }
    }

    #[test]
    fn a_name_must_be_the_keys_and_the_publisher_the_peer() {
        let g = grant(false);
        // An allowed name over a denied procedure's key.
        let hidden = store(Some("svc.echo"), "billing.pay", 60_000, PEER);
        let r = check_store(&g, REALM, &PEER, &hidden);
        assert_eq!(refused(r), ("invalid", ErrorCode::MalformedBody));
        // Another realm's key for the same name.
        let mut other = store(Some("svc.echo"), "svc.echo", 60_000, PEER);
        other.key = crate::rpc::procedure_key("other.realm", "svc.echo");
        let r = check_store(&g, REALM, &PEER, &other);
        assert_eq!(refused(r), ("invalid", ErrorCode::MalformedBody));
        // Another publisher's record, a withdrawal included.
        for ttl in [60_000, 0] {
            let theirs = store(Some("svc.echo"), "svc.echo", ttl, [8; 32]);
            let r = check_store(&g, REALM, &PEER, &theirs);
            assert_eq!(refused(r), ("invalid", ErrorCode::MalformedBody));
        }
    }

    #[test]
    fn an_unnamed_store_passes_only_an_open_register_rule() {
        let unnamed = store(None, "svc.echo", 60_000, PEER);
        // Register is restricted: the procedure must be named (an older node's store).
        let r = check_store(&grant(true), REALM, &PEER, &unnamed);
        assert_eq!(refused(r), ("denied", ErrorCode::PermissionDenied));
        let mut open = grant(false);
        open.permissions.register = Default::default();
        assert_eq!(check_store(&open, REALM, &PEER, &unnamed), Ok(()));
    }

    #[test]
    fn calls_and_providers_follow_call_and_register() {
        let g = grant(false);
        assert_eq!(check_call(&g, "svc.echo"), Ok(()));
        let e = check_call(&g, "billing.x").unwrap_err();
        assert_eq!(e.code, RpcError::PERMISSION_DENIED);
        assert!(e.message.contains("call") && e.message.contains("billing.x"));
        assert!(may_provide(&g, "svc.echo") && !may_provide(&g, "billing.pay"));
        let only = grant(true);
        assert!(may_provide(&only, "svc.a.b") && !may_provide(&only, "other"));
        // `*` is one segment: a deeper name is not denied by `billing.*`.
        assert!(may_provide(&g, "billing.pay.refund"));
    }
}
