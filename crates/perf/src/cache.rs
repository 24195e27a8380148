//! [`Cached`]: a result cache in front of a pool, on moka, with the counters
//! moka does not keep.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forkyard_ipc::Message;
use forkyard_pool::{Pool, PoolError};
use moka::future::Cache;
use moka::notification::RemovalCause;
use serde::Serialize;

use crate::advice::{Advice, Trace};

/// Anything a [`Cached`] can put a cache in front of: a [`Pool`], or for
/// tests and benches a plain async function ([`FnBackend`]).
pub trait Backend<Req, Resp>: Send + Sync + 'static {
    /// Runs one request.
    fn call(&self, req: Req) -> impl Future<Output = Result<Resp, PoolError>> + Send;
}

impl<Req: Message + Clone + Sync, Resp: Message> Backend<Req, Resp> for Pool<Req, Resp> {
    fn call(&self, req: Req) -> impl Future<Output = Result<Resp, PoolError>> + Send {
        Pool::call(self, req)
    }
}

/// An async function as a [`Backend`].
pub struct FnBackend<F>(pub F);

impl<F> fmt::Debug for FnBackend<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnBackend")
    }
}

impl<Req, Resp, F, Fut> Backend<Req, Resp> for FnBackend<F>
where
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, PoolError>> + Send,
{
    fn call(&self, req: Req) -> impl Future<Output = Result<Resp, PoolError>> + Send {
        (self.0)(req)
    }
}

type KeyFn<Req> = Arc<dyn Fn(&Req) -> Vec<u8> + Send + Sync>;
type Predicate<Req> = Arc<dyn Fn(&Req) -> bool + Send + Sync>;

/// What the cache holds per key: a result, or (with a negative TTL) an error.
type Entry<Resp> = Arc<(Result<Resp, Arc<PoolError>>, u32)>;

/// Settings for a [`Cached`]; made by [`Cached::builder`].
#[must_use = "a builder does nothing until .build()"]
pub struct CacheBuilder<Req, Resp, B> {
    backend: B,
    max_bytes: u64,
    ttl: Option<Duration>,
    tti: Option<Duration>,
    negative_ttl: Option<Duration>,
    key: Option<KeyFn<Req>>,
    cacheable: Option<Predicate<Req>>,
    trace: Option<(usize, f64)>,
    _resp: std::marker::PhantomData<fn() -> Resp>,
}

impl<Req, Resp, B> fmt::Debug for CacheBuilder<Req, Resp, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("max_bytes", &self.max_bytes)
            .field("ttl", &self.ttl)
            .field("tti", &self.tti)
            .field("negative_ttl", &self.negative_ttl)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp, B> CacheBuilder<Req, Resp, B>
where
    Req: serde::Serialize + Send + 'static,
    Resp: serde::Serialize + Clone + Send + Sync + 'static,
    B: Backend<Req, Resp>,
{
    /// The cache's capacity in bytes (keys plus encoded results; default 64 MiB).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Entries live at most this long (default: no limit).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Entries not read for this long expire (default: no limit).
    pub fn time_to_idle(mut self, tti: Duration) -> Self {
        self.tti = Some(tti);
        self
    }

    /// Cache errors too, for this long (default: errors are never cached).
    /// Keep it short: it turns a transient failure into one for every caller
    /// of that key until it expires.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// The key of a request (default: its postcard encoding).
    pub fn key_fn(mut self, key: impl Fn(&Req) -> Vec<u8> + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    /// Whether a request may be cached (default: all). The others go to the
    /// pool every time and are counted as `bypassed`.
    pub fn cacheable(mut self, pred: impl Fn(&Req) -> bool + Send + Sync + 'static) -> Self {
        self.cacheable = Some(Arc::new(pred));
        self
    }

    /// Records the last `max` lookups (a key hash and the entry's size) for
    /// [`Cached::advise`]; with `sample_rate` below 1, only that share of the
    /// key space (SHARDS spatial sampling), so a long trace stays small.
    pub fn record_trace(mut self, max: usize, sample_rate: f64) -> Self {
        self.trace = Some((max, sample_rate.clamp(1e-4, 1.0)));
        self
    }

    /// Makes the cache.
    pub fn build(self) -> Cached<Req, Resp, B> {
        let counters = Arc::new(Counters::default());
        let listener = counters.clone();
        let negative_ttl = self.negative_ttl;
        let mut cache = Cache::builder()
            .max_capacity(self.max_bytes)
            .weigher(|_k: &Vec<u8>, v: &Entry<Resp>| v.1)
            .eviction_listener(move |_k, _v, cause| listener.removed(cause))
            .expire_after(NegativeExpiry(negative_ttl));
        if let Some(ttl) = self.ttl {
            cache = cache.time_to_live(ttl);
        }
        if let Some(tti) = self.tti {
            cache = cache.time_to_idle(tti);
        }
        Cached {
            inner: Arc::new(Inner {
                backend: self.backend,
                cache: cache.build(),
                key: self.key,
                cacheable: self.cacheable,
                negative: negative_ttl.is_some(),
                counters,
                window: Mutex::new(Window::default()),
                trace: self
                    .trace
                    .map(|(max, rate)| Mutex::new(Trace::new(max, rate))),
                max_bytes: self.max_bytes,
                started: Instant::now(),
            }),
        }
    }
}

/// Errors expire after the negative TTL; results follow the cache's TTL and
/// time-to-idle.
struct NegativeExpiry(Option<Duration>);

impl<V> moka::Expiry<Vec<u8>, Arc<(Result<V, Arc<PoolError>>, u32)>> for NegativeExpiry {
    fn expire_after_create(
        &self,
        _key: &Vec<u8>,
        value: &Arc<(Result<V, Arc<PoolError>>, u32)>,
        _created_at: Instant,
    ) -> Option<Duration> {
        match value.0 {
            Ok(_) => None,
            Err(_) => self.0,
        }
    }
}

/// A result cache in front of a pool: a call whose key is cached returns at
/// once; concurrent calls for one missing key run it **once** and share the
/// result; errors are not cached unless [`CacheBuilder::negative_ttl`] says so.
///
/// Cloning gives another handle on the same cache.
pub struct Cached<Req, Resp, B = Pool<Req, Resp>> {
    inner: Arc<Inner<Req, Resp, B>>,
}

impl<Req, Resp, B> Clone for Cached<Req, Resp, B> {
    fn clone(&self) -> Self {
        Cached {
            inner: self.inner.clone(),
        }
    }
}

impl<Req, Resp, B> fmt::Debug for Cached<Req, Resp, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("max_bytes", &self.inner.max_bytes)
            .finish_non_exhaustive()
    }
}

struct Inner<Req, Resp, B> {
    backend: B,
    cache: Cache<Vec<u8>, Entry<Resp>>,
    key: Option<KeyFn<Req>>,
    cacheable: Option<Predicate<Req>>,
    negative: bool,
    counters: Arc<Counters>,
    window: Mutex<Window>,
    trace: Option<Mutex<Trace>>,
    max_bytes: u64,
    started: Instant,
}

impl<Req, Resp> Cached<Req, Resp, Pool<Req, Resp>>
where
    Req: Message + Clone + Sync,
    Resp: Message + Clone + Sync,
{
    /// A cache in front of `pool`.
    pub fn builder(pool: Pool<Req, Resp>) -> CacheBuilder<Req, Resp, Pool<Req, Resp>> {
        Cached::with_backend(pool)
    }
}

impl<Req, Resp, B> Cached<Req, Resp, B>
where
    Req: serde::Serialize + Send + 'static,
    Resp: serde::Serialize + Clone + Send + Sync + 'static,
    B: Backend<Req, Resp>,
{
    /// A cache in front of any [`Backend`].
    pub fn with_backend(backend: B) -> CacheBuilder<Req, Resp, B> {
        CacheBuilder {
            backend,
            max_bytes: 64 << 20,
            ttl: None,
            tti: None,
            negative_ttl: None,
            key: None,
            cacheable: None,
            trace: None,
            _resp: std::marker::PhantomData,
        }
    }

    /// What the cache is in front of.
    pub fn backend(&self) -> &B {
        &self.inner.backend
    }

    /// The result for `req`: from the cache, from a call already running for
    /// the same key (single flight), or from the backend.
    ///
    /// A coalesced caller whose leader fails gets the leader's error.
    pub async fn call(&self, req: Req) -> Result<Resp, Arc<PoolError>> {
        let inner = &*self.inner;
        let c = &inner.counters;
        if inner.cacheable.as_ref().is_some_and(|p| !p(&req)) {
            c.bypassed.fetch_add(1, Ordering::Relaxed);
            c.executions.fetch_add(1, Ordering::Relaxed);
            return inner.backend.call(req).await.map_err(Arc::new);
        }
        let key = match &inner.key {
            Some(f) => f(&req),
            None => postcard::to_allocvec(&req).unwrap_or_default(),
        };
        if let Some(entry) = inner.cache.get(&key).await {
            c.hits.fetch_add(1, Ordering::Relaxed);
            inner.looked_up(&key, entry.1, true);
            return entry.0.clone();
        }
        // Missing: the first caller runs it; the others wait for its result.
        let ran = AtomicBool::new(false);
        let init = async {
            ran.store(true, Ordering::Relaxed);
            c.executions.fetch_add(1, Ordering::Relaxed);
            let result = inner.backend.call(req).await;
            match result {
                Ok(resp) => {
                    let size =
                        key.len() + postcard::experimental::serialized_size(&resp).unwrap_or(0);
                    c.inserts.fetch_add(1, Ordering::Relaxed);
                    Ok(Arc::new((Ok(resp), weight(size))))
                }
                Err(e) if inner.negative => {
                    c.inserts.fetch_add(1, Ordering::Relaxed);
                    c.negative_inserts.fetch_add(1, Ordering::Relaxed);
                    Ok(Arc::new((Err(Arc::new(e)), weight(key.len() + 64))))
                }
                Err(e) => Err(e),
            }
        };
        let outcome = inner.cache.try_get_with_by_ref(&key, init).await;
        if ran.load(Ordering::Relaxed) {
            c.misses.fetch_add(1, Ordering::Relaxed);
        } else {
            c.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            Ok(entry) => {
                inner.looked_up(&key, entry.1, false);
                entry.0.clone()
            }
            Err(e) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                inner.looked_up(&key, 0, false);
                Err(e)
            }
        }
    }

    /// Whether `req` has a live (unexpired) entry; does not count as a lookup.
    pub fn contains(&self, req: &Req) -> bool {
        let key = match &self.inner.key {
            Some(f) => f(req),
            None => postcard::to_allocvec(req).unwrap_or_default(),
        };
        self.inner.cache.contains_key(&key)
    }

    /// Removes `req`'s entry (counted as an explicit eviction).
    pub async fn invalidate(&self, req: &Req) {
        let key = match &self.inner.key {
            Some(f) => f(req),
            None => postcard::to_allocvec(req).unwrap_or_default(),
        };
        self.inner.cache.invalidate(&key).await;
    }

    /// Removes every entry (each counted as an explicit eviction once moka
    /// has run its pending work; see [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn invalidate_all(&self) {
        self.inner.cache.invalidate_all();
    }

    /// Lets moka finish its deferred work (admissions, evictions,
    /// expirations) now, so that counts and sizes are up to date.
    pub async fn run_pending_tasks(&self) {
        self.inner.cache.run_pending_tasks().await;
    }

    /// The counters, entry count, bytes held and hit rates.
    pub fn stats(&self) -> CacheStats {
        let inner = &*self.inner;
        let c = &inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (hits, misses, coalesced) = (get(&c.hits), get(&c.misses), get(&c.coalesced));
        let lookups = hits + misses + coalesced;
        let now = inner.started.elapsed().as_secs();
        let (recent_hits, recent_lookups) = inner
            .window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last(now, 60);
        CacheStats {
            calls: lookups + get(&c.bypassed),
            hits,
            misses,
            coalesced,
            bypassed: get(&c.bypassed),
            executions: get(&c.executions),
            errors: get(&c.errors),
            inserts: get(&c.inserts),
            negative_inserts: get(&c.negative_inserts),
            evicted_size: get(&c.evicted_size),
            evicted_expired: get(&c.evicted_expired),
            evicted_explicit: get(&c.evicted_explicit),
            replaced: get(&c.replaced),
            entries: inner.cache.entry_count(),
            bytes: inner.cache.weighted_size(),
            max_bytes: inner.max_bytes,
            hit_rate: ratio(hits, lookups),
            hit_rate_last_minute: ratio(recent_hits, recent_lookups),
        }
    }

    /// The miss-ratio curve over the recorded trace (see
    /// [`CacheBuilder::record_trace`]): the hit rate this cache would have at
    /// 1/16 to 4 times its size, and the smallest size that reaches `target`.
    /// `None` if no trace was recorded.
    pub fn advise(&self, target: f64) -> Option<Advice> {
        let trace = self.inner.trace.as_ref()?;
        let trace = trace.lock().unwrap_or_else(|p| p.into_inner());
        Some(trace.advise(self.inner.max_bytes, target))
    }
}

impl<Req, Resp, B> Inner<Req, Resp, B> {
    fn looked_up(&self, key: &[u8], bytes: u32, hit: bool) {
        let now = self.started.elapsed().as_secs();
        self.window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(now, hit);
        if let Some(trace) = &self.trace {
            let mut h = rustc_hash::FxHasher::default();
            key.hash(&mut h);
            trace
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(h.finish(), bytes);
        }
    }
}

fn weight(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX).max(1)
}

pub(crate) fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    bypassed: AtomicU64,
    executions: AtomicU64,
    errors: AtomicU64,
    inserts: AtomicU64,
    negative_inserts: AtomicU64,
    evicted_size: AtomicU64,
    evicted_expired: AtomicU64,
    evicted_explicit: AtomicU64,
    replaced: AtomicU64,
}

impl Counters {
    fn removed(&self, cause: RemovalCause) {
        let counter = match cause {
            RemovalCause::Size => &self.evicted_size,
            RemovalCause::Expired => &self.evicted_expired,
            RemovalCause::Explicit => &self.evicted_explicit,
            RemovalCause::Replaced => &self.replaced,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Lookups per second for the last minute's hit rate.
#[derive(Default)]
struct Window {
    /// (second since start, hits, lookups), oldest first.
    secs: VecDeque<(u64, u64, u64)>,
}

impl Window {
    fn add(&mut self, now: u64, hit: bool) {
        match self.secs.back_mut() {
            Some((s, h, n)) if *s == now => {
                *h += u64::from(hit);
                *n += 1;
            }
            _ => {
                self.secs.push_back((now, u64::from(hit), 1));
                while self.secs.len() > 61 {
                    self.secs.pop_front();
                }
            }
        }
    }

    fn last(&self, now: u64, secs: u64) -> (u64, u64) {
        self.secs
            .iter()
            .filter(|(s, _, _)| s + secs > now)
            .fold((0, 0), |(h, n), (_, dh, dn)| (h + dh, n + dn))
    }
}

/// A [`Cached`]'s counters.
///
/// They add up: `calls == hits + misses + coalesced + bypassed`, and
/// `executions == misses + bypassed` (each miss runs the backend once).
/// Evictions are counted by cause as moka reports them (some after its
/// deferred work has run).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CacheStats {
    /// Calls that ended (`hits + misses + coalesced + bypassed`; a dropped
    /// call is not counted).
    pub calls: u64,
    /// Calls answered from the cache.
    pub hits: u64,
    /// Calls that found no entry and ran the backend.
    pub misses: u64,
    /// Calls that found no entry and waited for another call's run of the same key.
    pub coalesced: u64,
    /// Calls the `cacheable` predicate sent straight to the backend.
    pub bypassed: u64,
    /// Backend runs started (misses plus bypassed calls; more if a caller
    /// that was running one dropped its call, in which case a waiting caller
    /// runs it again).
    pub executions: u64,
    /// Calls that ended with an error not taken from the cache.
    pub errors: u64,
    /// Entries put in the cache (results, and errors with a negative TTL).
    pub inserts: u64,
    /// Of which errors.
    pub negative_inserts: u64,
    /// Entries evicted (or not admitted) for room.
    pub evicted_size: u64,
    /// Entries that expired (TTL, time-to-idle, negative TTL).
    pub evicted_expired: u64,
    /// Entries removed by `invalidate`.
    pub evicted_explicit: u64,
    /// Entries replaced by a newer value for their key.
    pub replaced: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now (keys plus encoded values).
    pub bytes: u64,
    /// The capacity in bytes.
    pub max_bytes: u64,
    /// `hits / (hits + misses + coalesced)` since the start.
    pub hit_rate: f64,
    /// The same over the last 60 seconds.
    pub hit_rate_last_minute: f64,
}
