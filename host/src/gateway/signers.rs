//! A fixed set of component instances, each holding the merchant.
//!
//! Why a pool: a component instance is single-threaded (`&mut`), and the
//! gateway signs and verifies from many tasks at once. Calls into the
//! component take microseconds and never await, so a task borrows an
//! instance for one synchronous call and gives it back; nothing holds an
//! instance across network I/O.
//!
//! Why re-keying reads the key source again: the host does not keep the
//! key. Each instance receives it once, and the host's copy is zeroized at
//! once. An instance that trapped (budget or memory exhausted by hostile
//! input) is thrown away, and its replacement is keyed from the source —
//! the owner-only key file or the environment — not from a copy in memory.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::error::Error;
use crate::key::ApiKey;
use crate::sandbox::signer::MerchantSettings;
use crate::sandbox::{MerchantHandle, Sandbox, SignerInstance};

/// Produces the key for a new instance, from a source outside the host's memory.
pub type KeyProvider = Arc<dyn Fn() -> Result<ApiKey, Error> + Send + Sync>;

/// One instance and the merchant inside it.
pub struct Signer {
    /// The instance.
    pub instance: SignerInstance,
    /// The merchant it holds.
    pub merchant: MerchantHandle,
    generation: u64,
}

/// Which instances exist and which are free.
struct Slots {
    idle: Vec<Signer>,
    /// Instances of the current generation, idle or lent out.
    live: usize,
    /// Bumped by every re-key; older instances are dropped when returned.
    generation: u64,
}

/// The pool.
pub struct SignerPool {
    sandbox: Arc<Sandbox>,
    settings: MerchantSettings,
    key: Mutex<KeyProvider>,
    slots: Mutex<Slots>,
    returned: Condvar,
    size: usize,
}

impl SignerPool {
    /// Builds `size` instances (at least one), each keyed once.
    pub fn new(
        sandbox: Arc<Sandbox>,
        settings: MerchantSettings,
        key: KeyProvider,
        size: usize,
    ) -> Result<Self, Error> {
        let pool = Self {
            sandbox,
            settings,
            key: Mutex::new(key),
            slots: Mutex::new(Slots {
                idle: Vec::new(),
                live: 0,
                generation: 0,
            }),
            returned: Condvar::new(),
            size: size.max(1),
        };
        pool.rekey_with_current()?;
        Ok(pool)
    }

    /// The merchant's settings.
    pub fn settings(&self) -> &MerchantSettings {
        &self.settings
    }

    /// Runs `f` on an instance. An instance that traps is replaced.
    pub fn with<R>(&self, f: impl FnOnce(&mut Signer) -> Result<R, Error>) -> Result<R, Error> {
        let mut signer = self.take()?;
        let result = f(&mut signer);
        match &result {
            Err(Error::Trap(_)) => self.replace_trapped(signer),
            _ => self.give_back(signer),
        }
        result
    }

    /// Replaces every instance with one keyed by `key` (after a sandbox key
    /// rotation). Instances lent out are dropped when they come back.
    pub fn rekey(&self, key: KeyProvider) -> Result<(), Error> {
        *self.key.lock().unwrap_or_else(PoisonError::into_inner) = key;
        self.rekey_with_current()
    }

    fn rekey_with_current(&self) -> Result<(), Error> {
        let generation = self.lock_slots().generation + 1;
        let key = self.provider()()?;
        let fresh = (0..self.size)
            .map(|_| self.keyed(&key, generation))
            .collect::<Result<Vec<_>, _>>()?;
        let mut slots = self.lock_slots();
        slots.live = fresh.len();
        slots.generation = generation;
        let old = std::mem::replace(&mut slots.idle, fresh);
        drop(slots);
        drop(old);
        self.returned.notify_all();
        Ok(())
    }

    fn provider(&self) -> KeyProvider {
        Arc::clone(&self.key.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn keyed(&self, key: &ApiKey, generation: u64) -> Result<Signer, Error> {
        let mut instance = self.sandbox.instantiate()?;
        let merchant = instance.merchant(&self.settings, key)?;
        Ok(Signer {
            instance,
            merchant,
            generation,
        })
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Result<Signer, Error> {
        let mut slots = self.lock_slots();
        loop {
            if let Some(signer) = slots.idle.pop() {
                return Ok(signer);
            }
            if slots.live == 0 {
                return Err(Error::Trap(
                    "no signer instance is left: every one trapped and none could be re-keyed"
                        .into(),
                ));
            }
            slots = self
                .returned
                .wait(slots)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn give_back(&self, signer: Signer) {
        let mut slots = self.lock_slots();
        if signer.generation == slots.generation {
            slots.idle.push(signer);
        }
        drop(slots);
        self.returned.notify_one();
    }

    fn replace_trapped(&self, trapped: Signer) {
        let generation = trapped.generation;
        drop(trapped);
        let fresh = self.provider()().and_then(|key| self.keyed(&key, generation));
        match fresh {
            Ok(signer) => self.give_back(signer),
            Err(e) => {
                tracing::error!(error = %e, "could not replace a trapped signer instance");
                let mut slots = self.lock_slots();
                if slots.generation == generation {
                    slots.live = slots.live.saturating_sub(1);
                }
                drop(slots);
                self.returned.notify_all();
            }
        }
    }
}
