//! Why a pod cannot be meshed. Each error names the annotation or the
//! field (as `spec.containers[0].ports[1]`) so the user can fix the manifest.

/// A pod the injector refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("annotation {annotation}: invalid value {value:?}: {reason}")]
    Annotation {
        annotation: &'static str,
        value: String,
        reason: String,
    },
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
    #[error("the pod has no spec")]
    NoSpec,
    #[error("the pod has no containers")]
    NoContainers,
    #[error("serializing the pod: {0}")]
    Serialize(String),
}

impl InjectError {
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
