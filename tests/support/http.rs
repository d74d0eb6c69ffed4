//! The fake API over real HTTP (axum on a loopback port), for kubectl and the backout binary.

use super::{status, FakeKube};

impl FakeKube {
    /// Serve the fake over HTTP on a loopback port (for the real kubectl and the backout binary);
    /// returns the base URL.
    pub async fn serve_http(&self) -> String {
        use axum::response::IntoResponse;
        let fake = self.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let fake = fake.clone();
            async move {
                let method = req.method().to_string();
                let uri = req.uri().clone();
                let ctype = req
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                    .await
                    .unwrap_or_default()
                    .to_vec();
                let (code, value) = match fake
                    .handle_parts(
                        method,
                        uri.path().to_string(),
                        uri.query().unwrap_or_default().to_string(),
                        ctype,
                        body,
                    )
                    .await
                {
                    Ok(out) => out,
                    Err(e) => status(500, "InternalError", &e.to_string()),
                };
                (
                    axum::http::StatusCode::from_u16(code).unwrap(),
                    [("content-type", "application/json")],
                    serde_json::to_vec(&value).unwrap(),
                )
                    .into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }
}
