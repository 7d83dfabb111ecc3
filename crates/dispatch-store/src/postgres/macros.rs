//! The two ways an operation reaches the database: a transaction, or one
//! statement on its own. Defined before the modules that use them.

/// Runs `$body` (an expression using the transaction `$tx`) in one
/// transaction, committed when it succeeds and rolled back when it fails.
macro_rules! in_tx {
    ($self:ident, |$tx:ident| $body:expr) => {{
        let result: Result<_, Fail> = async {
            let mut client = $self.client().await?;
            let $tx = client.transaction().await?;
            let value = $body.await?;
            $tx.commit().await?;
            Ok(value)
        }
        .await;
        $self.finish(result)
    }};
}

/// A one-statement read outside a transaction (one snapshot anyway): one
/// round trip rather than three (`BEGIN`, the statement, `COMMIT`).
macro_rules! read {
    ($self:ident, |$client:ident| $body:expr) => {{
        let result: Result<_, Fail> = async {
            let $client = $self.client().await?;
            $body.await
        }
        .await;
        $self.finish(result)
    }};
}
