//! Upload progress for the stall detector: a request body that hands its bytes to the HTTP
//! client in small frames and notes progress for each, added to a request by [`BodyProgress`].
//!
//! The HTTP client asks for the next frame only once it has room to send it, so the notes follow
//! the bytes really leaving: a slow link keeps noting progress, a stuck connection stops. The
//! last frame still sits in the kernel's send buffer (megabytes on Linux) when it is taken, so
//! taking it counts as progress ahead by the time that buffer may take to drain at the slowest
//! link supported.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use pgec2_core::storage::progress::Progress;

/// Largest frame handed to the HTTP client.
const FRAME: usize = 64 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An interceptor that wraps the request body so that sending it notes `progress`; taking the
/// last frame notes progress `drain` ahead.
#[derive(Debug)]
pub(super) struct BodyProgress {
    pub progress: Progress,
    pub drain: Duration,
}

impl Intercept for BodyProgress {
    fn name(&self) -> &'static str {
        "pgec2-body-progress"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (progress, drain) = (self.progress.clone(), self.drain);
        let body = std::mem::replace(context.request_mut().body_mut(), SdkBody::taken());
        // The contents stay the same (checksums and signature were computed on them already).
        *context.request_mut().body_mut() = body.map_preserve_contents(move |inner| {
            SdkBody::from_body_1_x(ProgressBody {
                inner: Box::pin(inner),
                pending: Bytes::new(),
                progress: progress.clone(),
                drain,
            })
        });
        Ok(())
    }
}

/// A body that yields its inner body's data in frames of at most [`FRAME`] bytes.
struct ProgressBody {
    inner: Pin<Box<SdkBody>>,
    /// The rest of the inner frame being handed out.
    pending: Bytes,
    progress: Progress,
    drain: Duration,
}

impl ProgressBody {
    fn next_piece(&mut self) -> Bytes {
        let take = self.pending.len().min(FRAME);
        let piece = self.pending.split_to(take);
        if self.pending.is_empty() && self.inner.is_end_stream() {
            self.progress.note_ahead(self.drain);
        } else {
            self.progress.note();
        }
        piece
    }
}

impl Body for ProgressBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.pending.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(this.next_piece()))));
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    this.pending = data;
                    Poll::Ready(Some(Ok(Frame::data(this.next_piece()))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = Body::size_hint(&*self.inner);
        let pending = self.pending.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + pending);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + pending);
        }
        hint
    }
}
