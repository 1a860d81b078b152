//! What can go wrong while the engine runs.

use burn::tensor::{Tensor, TensorReadError};

/// An engine failure a caller can meet: bad input, or the device failing.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A prompt without tokens (generation needs at least one to condition on).
    #[error("prompt {index} has no tokens; every prompt needs at least one")]
    EmptyPrompt {
        /// Position of the prompt in the batch.
        index: usize,
    },
    /// A prompt that fills the model's context (no room for a new token).
    #[error(
        "prompt {index} has {tokens} tokens; the model's context holds {context} (prompt and answer together)"
    )]
    ContextTooLong {
        /// Position of the prompt in the batch.
        index: usize,
        /// Its tokens.
        tokens: usize,
        /// The context length (`max_position_embeddings`, GGUF `context_length`).
        context: usize,
    },
    /// Reading a result back from the device failed (a lost or failing device).
    #[error("reading the {what} back from the device failed")]
    ReadBack {
        /// What was being read.
        what: &'static str,
        /// burn's error.
        #[source]
        source: TensorReadError,
    },
}

/// The values of `t` on the host as f32.
pub fn read_f32<const D: usize>(t: Tensor<D>, what: &'static str) -> Result<Vec<f32>, EngineError> {
    t.try_into_vec_as::<f32>()
        .map_err(|source| EngineError::ReadBack { what, source })
}

/// The single value of `t` on the host.
pub fn read_scalar(t: Tensor<1>, what: &'static str) -> Result<f32, EngineError> {
    t.try_into_scalar::<f32>()
        .map_err(|source| EngineError::ReadBack { what, source })
}

/// [`read_f32`] that awaits the device (a browser's WebGPU can only be read asynchronously).
pub async fn read_f32_async<const D: usize>(
    t: Tensor<D>,
    what: &'static str,
) -> Result<Vec<f32>, EngineError> {
    let data = t.into_data_async().await.map_err(|e| EngineError::ReadBack {
        what,
        source: e.into(),
    })?;
    data.try_into_vec_as::<f32>().map_err(|e| EngineError::ReadBack {
        what,
        source: e.into(),
    })
}
