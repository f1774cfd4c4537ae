//! One change to the kernel and everything needed to undo it exactly: what the planner
//! plans, the journal writes before it is made, the executor sends, and `repair undo`
//! reverts.

use serde::{Deserialize, Serialize};

use super::object::{Object, ObjectKind};
use crate::findings::Kind;

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Create the object (`before` is none).
    Add,
    /// Replace the object in place (same identity).
    Replace,
    /// Delete the object (`after` is none).
    Delete,
}

impl Action {
    /// `add`, `replace`, `delete`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }
}

/// One netlink change and everything needed to undo it exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Op {
    /// Add, replace or delete.
    pub action: Action,
    /// The Node the object belongs to (`none` for leftovers no Node has).
    pub node: String,
    /// The object's identity ([`Object::key`]).
    pub key: String,
    /// The object as it is now (none for an add).
    pub before: Option<Object>,
    /// The object as it will be (none for a delete).
    pub after: Option<Object>,
    /// The finding that names the object: its kind.
    pub finding_kind: Kind,
    /// … and its subject.
    pub finding_subject: String,
    /// Why, in words.
    pub why: String,
}

impl Op {
    /// Builds an operation from its before and after objects (at least one).
    pub fn between(
        before: Option<Object>,
        after: Option<Object>,
        node: &str,
        finding: (Kind, &str),
        why: String,
    ) -> Self {
        let action = match (&before, &after) {
            (None, Some(_)) => Action::Add,
            (Some(_), Some(_)) => Action::Replace,
            (Some(_), None) => Action::Delete,
            (None, None) => panic!("an operation needs a before or an after object"),
        };
        let key = after
            .as_ref()
            .or(before.as_ref())
            .map(Object::key)
            .expect("checked");
        Self {
            action,
            node: node.to_owned(),
            key,
            before,
            after,
            finding_kind: finding.0,
            finding_subject: finding.1.to_owned(),
            why,
        }
    }

    /// The command a person would type for it.
    pub fn command(&self) -> String {
        match (&self.before, &self.after) {
            (_, Some(after)) => after.set_command(match self.action {
                Action::Add => "add",
                _ => "replace",
            }),
            (Some(before), None) => before.del_command(),
            (None, None) => unreachable!("an operation has a before or an after object"),
        }
    }

    /// The operation that undoes this one exactly.
    pub fn inverse(&self) -> Op {
        Op {
            action: match self.action {
                Action::Add => Action::Delete,
                Action::Replace => Action::Replace,
                Action::Delete => Action::Add,
            },
            node: self.node.clone(),
            key: self.key.clone(),
            before: self.after.clone(),
            after: self.before.clone(),
            finding_kind: self.finding_kind,
            finding_subject: self.finding_subject.clone(),
            why: format!("undo: {}", self.command()),
        }
    }

    /// The object's kind.
    pub fn object_kind(&self) -> ObjectKind {
        self.after
            .as_ref()
            .or(self.before.as_ref())
            .map(Object::kind)
            .expect("an operation has an object")
    }
}
