//! The REST verbs over the store: get, list, create, replace, patch, delete, with the
//! apiserver's conflict, dry-run and subresource rules. Synchronous: each verb is one store
//! transaction, so a resourceVersion check and its write can never interleave with another.

use super::objects::{as_version, name_of, prepare_create, prepare_update, Stamp};
use super::patch::{self, PatchFailure, PatchKind};
use super::resources::{ResourceDef, Subresource};
use super::selector::Selector;
use super::status::{success, ApiError};
use super::store::{ObjKey, Store, Txn};
use serde_json::{json, Value};

/// A request aimed at a resource collection or object.
#[derive(Debug, Clone)]
pub struct Target {
    pub def: &'static ResourceDef,
    pub version: String,
    /// `None` = all namespaces (or cluster-scoped).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<Subresource>,
}

impl Target {
    pub fn key(&self, name: &str) -> ObjKey {
        ObjKey {
            group: self.def.group,
            plural: self.def.plural,
            namespace: self.namespace.clone().unwrap_or_default(),
            name: name.to_string(),
        }
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

/// Query options that change write behaviour.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOpts {
    /// `?dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
}

pub type Reply = Result<(u16, Value), ApiError>;

fn current<'a>(txn: &'a Txn<'_>, t: &Target) -> Result<&'a Value, ApiError> {
    txn.get(&t.key(t.name()))
        .ok_or_else(|| ApiError::not_found(t.def, t.name()))
}

fn rv(obj: &Value) -> &str {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn get(store: &Store, t: &Target) -> Reply {
    store.read(|txn| {
        let obj = current(txn, t)?.clone();
        Ok((200, as_version(t.def, &t.version, obj)))
    })
}

/// Objects matching the selectors, plus the store's resourceVersion at the time of the read.
pub fn select(
    store: &Store,
    t: &Target,
    labels: &Selector,
    fields: &Selector,
) -> (Vec<Value>, u64) {
    store.read(|txn| {
        // Filter before copying: a selective list costs what it returns, not the resource.
        let items = txn
            .iter(t.def.group, t.def.plural, t.namespace.as_deref())
            .map(|(_, o)| o)
            .filter(|o| labels.matches_labels(o) && fields.matches_fields(o))
            .map(|o| as_version(t.def, &t.version, o.clone()))
            .collect();
        (items, txn.current_rv())
    })
}

pub fn list(store: &Store, t: &Target, labels: &Selector, fields: &Selector) -> Reply {
    let (items, rv) = select(store, t, labels, fields);
    Ok((
        200,
        json!({
            "apiVersion": t.def.api_version(&t.version),
            "kind": format!("{}List", t.def.kind),
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items,
        }),
    ))
}

pub fn create(store: &Store, t: &Target, body: Value, stamp: &Stamp, opts: WriteOpts) -> Reply {
    let ns = t.namespace.clone().unwrap_or_default();
    let obj = prepare_create(t.def, &t.version, &ns, body, stamp)?;
    let name = name_of(&obj).to_string();
    store.write(|txn| {
        let key = t.key(&name);
        if txn.get(&key).is_some() {
            return Err(ApiError::already_exists(t.def, &name));
        }
        let stored = if opts.dry_run { obj } else { txn.put(key, obj) };
        Ok((201, as_version(t.def, &t.version, stored)))
    })
}

/// Shared tail of PUT and PATCH: stale resourceVersion => 409, then store.
fn commit(txn: &mut Txn<'_>, t: &Target, old: &Value, new: Value, opts: WriteOpts) -> Reply {
    let sent = rv(&new);
    if !sent.is_empty() && sent != rv(old) {
        return Err(ApiError::conflict(t.def, t.name()));
    }
    let next = prepare_update(t.def, &t.version, old, new, t.sub)?;
    let stored = if opts.dry_run {
        next
    } else {
        txn.put(t.key(t.name()), next)
    };
    Ok((200, as_version(t.def, &t.version, stored)))
}

pub fn replace(store: &Store, t: &Target, body: Value, opts: WriteOpts) -> Reply {
    store.write(|txn| {
        let old = current(txn, t)?.clone();
        commit(txn, t, &old, body, opts)
    })
}

/// The patch formats a resource accepts (custom resources have no strategic merge).
pub fn accepted_patches(def: &ResourceDef) -> &'static [&'static str] {
    if def.custom {
        &[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ]
    } else {
        &[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ]
    }
}

/// Parses the Content-Type of a PATCH, answering 415 like the apiserver for what it rejects.
pub fn patch_kind(def: &ResourceDef, content_type: &str) -> Result<PatchKind, ApiError> {
    let accepted = accepted_patches(def);
    match PatchKind::from_content_type(content_type) {
        Some(PatchKind::Strategic) if def.custom => Err(ApiError::unsupported_media_type(accepted)),
        Some(PatchKind::Apply) => Err(ApiError::unsupported_media_type(
            &accepted[..accepted.len() - 1],
        )),
        Some(k) => Ok(k),
        None => Err(ApiError::unsupported_media_type(accepted)),
    }
}

/// Applies a patch to the stored object (or to the view `view` derives from it, written back
/// with `write_back`, for the scale subresource).
pub fn patch(store: &Store, t: &Target, kind: PatchKind, body: &[u8], opts: WriteOpts) -> Reply {
    store.write(|txn| {
        let old = current(txn, t)?.clone();
        let shown = as_version(t.def, &t.version, old.clone());
        let new = patch::apply(&shown, kind, body).map_err(|f| match f {
            PatchFailure::Malformed(m) => ApiError::bad_request(m),
            PatchFailure::NotApplicable(m) => ApiError::unprocessable(m),
        })?;
        commit(txn, t, &old, new, opts)
    })
}

pub fn delete(store: &Store, t: &Target, opts: WriteOpts, cascade: bool) -> Reply {
    store.write(|txn| {
        let old = current(txn, t)?.clone();
        if opts.dry_run {
            return Ok((200, as_version(t.def, &t.version, old)));
        }
        let key = t.key(t.name());
        let gone = txn.delete(&key).unwrap_or_else(|| old.clone());
        if cascade && t.def.is("apps", "deployments") {
            // The garbage collector's job: ReplicaSets owned by the Deployment go with it.
            let uid = old
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            for (rs, _) in txn.owned_by(uid, "apps", "replicasets") {
                txn.delete(&rs);
            }
        }
        // Custom resources answer with the deleted object, built-in types with a Status.
        if t.def.custom {
            Ok((200, as_version(t.def, &t.version, gone)))
        } else {
            Ok((200, success(t.def, t.name())))
        }
    })
}
