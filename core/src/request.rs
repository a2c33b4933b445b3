//! The request being served: its id, set by the HTTP layer around everything one request
//! does (handlers, the engine work they wait for), so that error messages and audit records
//! deeper down can name it without it being passed along.

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `work` as the request `id`.
pub async fn scope<F: std::future::Future>(id: String, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// The id of the request this task serves; `none` outside a request (background work).
pub fn current_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "none".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_id_is_set_inside_the_scope_only() {
        assert_eq!(current_id(), "none");
        assert_eq!(scope("r1".to_owned(), async { current_id() }).await, "r1");
        assert_eq!(current_id(), "none");
    }
}
