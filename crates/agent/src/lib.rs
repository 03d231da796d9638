//! The Outpost edge agent: enrollment, the outbound channel to the control
//! plane, the local store and the reconciler. It arrives with the agent
//! issue; the crate exists so the workspace has its final shape.
