//! Fault injection for the fake API: which requests fail, and how.

#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer with this HTTP status (and a Status body).
    Status(u16),
    /// Never answer (the client's timeout fires).
    Hang,
    /// Fail the connection.
    Drop,
    /// Perform the request, then never answer: the write landed but the client cannot know.
    ApplyThenHang,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Option<String>,
    /// Matches request paths ending with this (e.g. `deployments/web/scale`).
    pub path_contains: String,
    pub kind: FaultKind,
    /// How many matching requests to affect.
    pub times: usize,
}

impl Fault {
    pub fn on(method: &str, path_contains: &str, kind: FaultKind, times: usize) -> Self {
        Self {
            method: Some(method.into()),
            path_contains: path_contains.into(),
            kind,
            times,
        }
    }
}
