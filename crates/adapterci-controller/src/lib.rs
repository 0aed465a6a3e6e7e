//! Watchers, triggers, the run scheduler and the reconcile loop
