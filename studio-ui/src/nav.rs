//! Navigation from event handlers that are `Copy` closures.
//!
//! The router's navigate function is not `Send`, so it can only be kept in thread-local
//! storage; on the server a page's values may be dropped on another worker thread than the
//! one that rendered it, and a thread-local value panics there. Handlers never run on the
//! server, so there the navigator holds nothing.

#[cfg(feature = "hydrate")]
use leptos::prelude::*;
#[cfg(feature = "hydrate")]
use leptos_router::NavigateOptions;

/// The router's navigate function, shared.
#[cfg(feature = "hydrate")]
type NavigateFn = std::rc::Rc<dyn Fn(&str, NavigateOptions)>;

#[derive(Clone, Copy)]
pub struct Navigator {
    #[cfg(feature = "hydrate")]
    inner: StoredValue<NavigateFn, LocalStorage>,
}

impl Navigator {
    /// Must be called while a component runs, inside the `<Router>`.
    pub fn new() -> Self {
        #[cfg(feature = "hydrate")]
        {
            let navigate = leptos_router::hooks::use_navigate();
            let inner: NavigateFn = std::rc::Rc::new(navigate);
            Self { inner: StoredValue::new_local(inner) }
        }
        #[cfg(not(feature = "hydrate"))]
        Self {}
    }

    /// Goes to `path` (in the browser; nothing on the server, where no handler runs).
    /// Nothing happens once the page that made the navigator is gone (the user moved on).
    pub fn go(self, path: &str) {
        #[cfg(feature = "hydrate")]
        let _ = self.inner.try_with_value(|nav| nav(path, NavigateOptions::default()));
        #[cfg(not(feature = "hydrate"))]
        let _ = path;
    }

    /// The navigate function itself, for a task that moves the page last and may outlive
    /// the component that started it.
    pub fn owned(self) -> impl Fn(&str) + 'static {
        #[cfg(feature = "hydrate")]
        {
            let nav = self.inner.try_get_value();
            move |path: &str| {
                if let Some(nav) = &nav {
                    nav(path, NavigateOptions::default())
                }
            }
        }
        #[cfg(not(feature = "hydrate"))]
        |_: &str| {}
    }
}

impl Default for Navigator {
    fn default() -> Self {
        Self::new()
    }
}
