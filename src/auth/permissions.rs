//! Permissions (`docs/AUTH.md`, "Permissions"): what a credential lets its subject do, as
//! allow and deny patterns per action, in the spirit of NATS's publish/subscribe permissions.
//!
//! A name (a topic, a procedure, a state key) is a dot-separated list of segments; a
//! permission pattern is such a list in which a segment may be exactly `*` (one segment) or
//! `**` (zero or more), as topic patterns are (`crate::topic`). For each action:
//! - no allow list (or an empty one) allows every name; otherwise a name must match one of
//!   its patterns;
//! - a name that matches a deny pattern is refused, whatever the allow list says.
//!
//! A subscription is a pattern, not a name: it is allowed when an allow pattern covers it
//! (every topic it matches is allowed, [`crate::topic::covers`]) and it overlaps no deny
//! pattern ([`crate::topic::overlaps`]). So under `deny = ["billing.**"]` a subscription to
//! `**` is refused as a whole (NATS would accept it and filter deliveries): the rule is
//! checked once, at `subscribe`, and never on the delivery path.
//!
//! Pure: no I/O, no clock.

use serde::{Deserialize, Serialize};

/// Most patterns in one allow or deny list.
pub const MAX_PATTERNS: usize = 32;

/// Longest permission pattern, bytes.
pub const MAX_PATTERN_LEN: usize = 256;

/// Most segments in a permission pattern.
pub const MAX_PATTERN_SEGMENTS: usize = 32;

/// What a permission governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `publish` to a topic.
    Publish,
    /// `subscribe` to a pattern.
    Subscribe,
    /// `call` a procedure.
    Call,
    /// `register` a procedure (at a bridge: advertise a provider record, `store`).
    Register,
    /// Write a state key (`$crdt.update`).
    State,
}

impl Action {
    /// Every action, in the order of the `action` label's values.
    pub const ALL: [Action; 5] = [
        Action::Publish,
        Action::Subscribe,
        Action::Call,
        Action::Register,
        Action::State,
    ];

    /// The name used in the credential (`perm` keys), the `action` label of
    /// `macula_permission_denied_total` and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Call => "call",
            Action::Register => "register",
            Action::State => "state",
        }
    }
}

/// A malformed permission pattern or list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission {action} {list}: {problem}")]
pub struct PermissionError {
    /// The action (`publish`, …).
    pub action: &'static str,
    /// `allow` or `deny`.
    pub list: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// The allow and deny patterns of one action (normalised: runs of `**` collapsed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `allow`: names must match one of these (empty: every name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// `deny`: names matching one of these are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl Rule {
    /// Whether this rule allows everything.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether concrete `name` is allowed.
    pub fn permits(&self, name: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|p| crate::topic::matches(p, name)))
            && !self.deny.iter().any(|p| crate::topic::matches(p, name))
    }

    /// Whether every name `pattern` matches is allowed (see the module docs).
    pub fn permits_pattern(&self, pattern: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|p| crate::topic::covers(p, pattern)))
            && !self.deny.iter().any(|p| crate::topic::overlaps(p, pattern))
    }

    fn normalised(self, action: Action) -> Result<Rule, PermissionError> {
        Ok(Rule {
            allow: normalise_list(self.allow, action, "allow")?,
            deny: normalise_list(self.deny, action, "deny")?,
        })
    }
}

fn normalise_list(
    list: Vec<String>,
    action: Action,
    which: &'static str,
) -> Result<Vec<String>, PermissionError> {
    let err = |problem: String| PermissionError {
        action: action.as_str(),
        list: which,
        problem,
    };
    if list.len() > MAX_PATTERNS {
        return Err(err(format!("more than {MAX_PATTERNS} patterns")));
    }
    list.into_iter()
        .map(|p| normalise_pattern(&p).map_err(|e| err(format!("{p:?}: {e}"))))
        .collect()
}

/// Checks a permission pattern and returns its normal form (runs of `**` collapsed).
/// Segments are non-empty, hold no control character and no `*` unless the whole segment
/// is `*` or `**` (names may hold any other character: state keys are not topics).
/// Errors: a message naming the problem.
pub fn normalise_pattern(p: &str) -> Result<String, String> {
    if p.is_empty() || p.len() > MAX_PATTERN_LEN {
        return Err(format!("must be 1–{MAX_PATTERN_LEN} bytes"));
    }
    if p.split('.').count() > MAX_PATTERN_SEGMENTS {
        return Err(format!("more than {MAX_PATTERN_SEGMENTS} segments"));
    }
    for seg in p.split('.') {
        if seg.is_empty() {
            return Err("empty segment (leading, trailing or doubled dot)".into());
        }
        if seg.chars().any(char::is_control) {
            return Err("control character".into());
        }
        if seg.contains('*') && seg != "*" && seg != "**" {
            return Err(format!(
                "segment {seg:?}: a wildcard is exactly `*` or `**`"
            ));
        }
    }
    Ok(crate::topic::collapse_globs(p))
}

/// The permissions of a credential: one [`Rule`] per [`Action`]. The default allows
/// everything. Serialised (MessagePack, in the credential's `perm` key) as a map whose keys
/// are `pub`, `sub`, `call`, `reg` and `state`, each `{allow?: [str], deny?: [str]}`;
/// absent keys allow everything; unknown keys are refused (a restriction a verifier does not
/// understand must not be ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// Publishing.
    #[serde(rename = "pub", default, skip_serializing_if = "Rule::is_open")]
    pub publish: Rule,
    /// Subscribing.
    #[serde(rename = "sub", default, skip_serializing_if = "Rule::is_open")]
    pub subscribe: Rule,
    /// Calling.
    #[serde(default, skip_serializing_if = "Rule::is_open")]
    pub call: Rule,
    /// Registering (providing) procedures.
    #[serde(rename = "reg", default, skip_serializing_if = "Rule::is_open")]
    pub register: Rule,
    /// Writing state keys.
    #[serde(default, skip_serializing_if = "Rule::is_open")]
    pub state: Rule,
}

impl Permissions {
    /// Whether nothing is restricted.
    pub fn is_open(&self) -> bool {
        Action::ALL.iter().all(|&a| self.rule(a).is_open())
    }

    /// The rule of `action`.
    pub fn rule(&self, action: Action) -> &Rule {
        match action {
            Action::Publish => &self.publish,
            Action::Subscribe => &self.subscribe,
            Action::Call => &self.call,
            Action::Register => &self.register,
            Action::State => &self.state,
        }
    }

    fn rule_mut(&mut self, action: Action) -> &mut Rule {
        match action {
            Action::Publish => &mut self.publish,
            Action::Subscribe => &mut self.subscribe,
            Action::Call => &mut self.call,
            Action::Register => &mut self.register,
            Action::State => &mut self.state,
        }
    }

    /// Whether concrete `name` is allowed for `action` ([`Action::Subscribe`] takes a
    /// pattern: [`Rule::permits_pattern`]).
    pub fn permits(&self, action: Action, name: &str) -> bool {
        match action {
            Action::Subscribe => self.subscribe.permits_pattern(name),
            a => self.rule(a).permits(name),
        }
    }

    /// Checks every pattern and returns the normal form. Errors: [`PermissionError`].
    pub fn normalised(mut self) -> Result<Permissions, PermissionError> {
        for a in Action::ALL {
            let r = std::mem::take(self.rule_mut(a));
            *self.rule_mut(a) = r.normalised(a)?;
        }
        Ok(self)
    }

    /// Adds `pattern` to `action`'s allow (`deny == false`) or deny list (for the operator
    /// tool). Errors: [`PermissionError`].
    pub fn add(
        &mut self,
        action: Action,
        deny: bool,
        pattern: &str,
    ) -> Result<(), PermissionError> {
        let list = if deny { "deny" } else { "allow" };
        let p = normalise_pattern(pattern).map_err(|problem| PermissionError {
            action: action.as_str(),
            list,
            problem: format!("{pattern:?}: {problem}"),
        })?;
        let r = self.rule_mut(action);
        let l = if deny { &mut r.deny } else { &mut r.allow };
        if l.len() >= MAX_PATTERNS {
            return Err(PermissionError {
                action: action.as_str(),
                list,
                problem: format!("more than {MAX_PATTERNS} patterns"),
            });
        }
        l.push(p);
        Ok(())
    }

    /// One line for humans: `publish allow [a.**] deny [a.secret]; …`, or `everything`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = Action::ALL
            .iter()
            .filter(|&&a| !self.rule(a).is_open())
            .map(|&a| {
                let r = self.rule(a);
                let mut s = a.as_str().to_string();
                if !r.allow.is_empty() {
                    s.push_str(&format!(" allow [{}]", r.allow.join(", ")));
                }
                if !r.deny.is_empty() {
                    s.push_str(&format!(" deny [{}]", r.deny.join(", ")));
                }
                s
            })
            .collect();
        if parts.is_empty() {
            "everything".into()
        } else {
            parts.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn perms(action: Action, allow: &[&str], deny: &[&str]) -> Permissions {
        let mut p = Permissions::default();
        for a in allow {
            p.add(action, false, a).unwrap();
        }
        for d in deny {
            p.add(action, true, d).unwrap();
        }
        p
    }

    #[test]
    fn default_allows_everything() {
        let p = Permissions::default();
        assert!(p.is_open());
        for a in Action::ALL {
            assert!(p.permits(a, "billing.x"));
        }
        assert!(p.permits(Action::Subscribe, "**"));
        assert_eq!(p.describe(), "everything");
    }

    #[test]
    fn allow_list_bounds_names() {
        let p = perms(Action::Publish, &["sensors.**"], &[]);
        assert!(p.permits(Action::Publish, "sensors.t1.temp"));
        assert!(p.permits(Action::Publish, "sensors"));
        assert!(!p.permits(Action::Publish, "billing.x"));
        // Other actions stay open.
        assert!(p.permits(Action::Call, "billing.x"));
        assert_eq!(p.describe(), "publish allow [sensors.**]");
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = perms(Action::Call, &["svc.**"], &["svc.admin.*"]);
        assert!(p.permits(Action::Call, "svc.echo"));
        assert!(!p.permits(Action::Call, "svc.admin.drop"));
        let only_deny = perms(Action::State, &[], &["billing.**"]);
        assert!(only_deny.permits(Action::State, "owner"));
        assert!(!only_deny.permits(Action::State, "billing.total"));
    }

    #[test]
    fn subscriptions_must_be_covered_and_clear_of_denials() {
        let p = perms(Action::Subscribe, &["sensors.**"], &["sensors.secret.**"]);
        assert!(p.permits(Action::Subscribe, "sensors.t1.*"));
        assert!(
            !p.permits(Action::Subscribe, "sensors.*.temp"),
            "sensors.secret.temp"
        );
        assert!(
            !p.permits(Action::Subscribe, "**"),
            "wider than the allow list"
        );
        assert!(
            !p.permits(Action::Subscribe, "sensors.**"),
            "overlaps a denial"
        );
        assert!(p.permits(Action::Subscribe, "sensors.public.*"));
    }

    #[test]
    fn names_need_not_be_topics() {
        let p = perms(Action::State, &["user:42.**"], &[]);
        assert!(p.permits(Action::State, "user:42.prefs"));
        assert!(!p.permits(Action::State, "user:43.prefs"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        let mut p = Permissions::default();
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "a*",
            "a.***",
            "a\u{1}b",
            &"x".repeat(257),
        ] {
            assert!(p.add(Action::Publish, false, bad).is_err(), "{bad:?}");
        }
        assert_eq!(normalise_pattern("a.**.**.b").unwrap(), "a.**.b");
        for i in 0..MAX_PATTERNS {
            p.add(Action::Publish, true, &format!("p{i}")).unwrap();
        }
        assert!(p.add(Action::Publish, true, "one.more").is_err());
    }

    #[test]
    fn wire_form_is_compact_and_strict() {
        let p = perms(Action::Publish, &["sensors.**"], &[]);
        let bytes = rmp_serde::to_vec_named(&p).unwrap();
        let back: Permissions = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, p);
        let open = rmp_serde::to_vec_named(&Permissions::default()).unwrap();
        assert_eq!(open, [0x80], "an open set is an empty map");
        #[derive(Serialize)]
        struct Future {
            publish_rate: u32,
        }
        let unknown = rmp_serde::to_vec_named(&Future { publish_rate: 5 }).unwrap();
        assert!(rmp_serde::from_slice::<Permissions>(&unknown).is_err());
    }

    fn seg() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "*", "**"])
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(seg(), 1..5).prop_map(|s| s.join("."))
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..6)
            .prop_map(|s| s.join("."))
    }

    proptest! {
        /// A subscription the rule permits never receives a topic the rule would refuse to
        /// a publisher-side check (`permits` on each concrete topic).
        #[test]
        fn permitted_subscriptions_see_only_permitted_topics(
            allow in prop::collection::vec(pattern(), 0..3),
            deny in prop::collection::vec(pattern(), 0..3),
            sub in pattern(),
            topics in prop::collection::vec(topic(), 1..20),
        ) {
            let rule = Rule { allow, deny }.normalised(Action::Subscribe).unwrap();
            let sub = normalise_pattern(&sub).unwrap();
            if rule.permits_pattern(&sub) {
                for t in &topics {
                    if crate::topic::matches(&sub, t) {
                        prop_assert!(rule.permits(t), "{} via {} under {:?}", t, sub, rule);
                    }
                }
            }
        }

        /// Decoding arbitrary bytes as permissions never panics.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(p) = rmp_serde::from_slice::<Permissions>(&bytes) {
                let _ = p.normalised();
            }
        }
    }
}
