//! One small timer helper every crate's event loop needs.

/// Waits until `deadline`, or forever when there is none.
///
/// The shape of the timer arm in a `tokio::select!` event loop whose next
/// deadline may not exist: the pool's, the supervisor's and the ipc cluster's
/// loops all wait on "the earliest deadline, if any" next to their channels.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::{Duration, Instant};
/// let next: Option<Instant> = Some(Instant::now() + Duration::from_millis(5));
/// tokio::select! {
///     () = forkyard_child::sleep_until(next) => println!("timer"),
///     () = forkyard_child::sleep_until(None::<Instant>) => unreachable!("never fires"),
/// }
/// # }
/// ```
pub async fn sleep_until(deadline: Option<impl Into<tokio::time::Instant>>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
