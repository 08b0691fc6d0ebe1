//! GetFlightInfo answered with bytes encoded once. A reused plan (see `service::PLAN_REUSE`) is kept
//! as its gRPC message frame and handed to HTTP/2 as those bytes, without a copy. tonic's generated
//! server can only encode a `FlightInfo`, and its codec copies even a ready encoding into a fresh
//! buffer: for a 10,000-endpoint FlightInfo (3.5 MB) that copy and the page faults of the buffer
//! were ~2 ms of server time per call, more than the socket writes. So this route answers the
//! GetFlightInfo path itself and hands every other path on; it sits inside the auth interceptor like
//! the generated server did.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::FlightDescriptor;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, LengthLimitError, Limited, StreamBody};
use hyper::body::Frame;
use prost::Message;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service as TowerService};
use tonic::server::NamedService;
use tonic::{Request, Status};

use crate::service::Service;

const GET_FLIGHT_INFO: &str = "/arrow.flight.protocol.FlightService/GetFlightInfo";
/// The flag byte and the big-endian u32 length before each gRPC message.
const PREFIX: usize = 5;

/// A gRPC message frame: the uncompressed flag, the length and the message's encoding.
#[derive(Debug, Clone)]
pub(crate) struct Framed(Bytes);

impl Framed {
    pub(crate) fn encode(message: &impl Message) -> Framed {
        let len = message.encoded_len();
        let mut buf = BytesMut::with_capacity(PREFIX + len);
        buf.put_u8(0);
        // Over u32::MAX it could not be sent anyway: `within` refuses anything over the limit.
        buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        message.encode_raw(&mut buf);
        Framed(buf.freeze())
    }

    /// The message's encoding.
    pub(crate) fn message(&self) -> Bytes {
        self.0.slice(PREFIX..)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// The Flight service as served: GetFlightInfo here, everything else by the generated server.
#[derive(Clone)]
pub(crate) struct FlightRoutes {
    generated: FlightServiceServer<Service>,
    service: Arc<Service>,
    max_decoding: usize,
    max_encoding: usize,
}

impl FlightRoutes {
    pub(crate) fn new(service: Arc<Service>, max_decoding: usize, max_encoding: usize) -> Self {
        FlightRoutes {
            generated: FlightServiceServer::from_arc(service.clone())
                .max_decoding_message_size(max_decoding)
                .max_encoding_message_size(max_encoding),
            service,
            max_decoding,
            max_encoding,
        }
    }

    async fn get_flight_info(self, req: http::Request<Body>) -> Result<Framed, Status> {
        let (parts, body) = req.into_parts();
        let descriptor = decode_request(body, self.max_decoding).await?;
        let request = Request::from_http(http::Request::from_parts(parts, descriptor));
        within(self.service.framed_info(request).await?, self.max_encoding)
    }
}

/// The frame, if its message has at most `max` bytes.
fn within(framed: Framed, max: usize) -> Result<Framed, Status> {
    let len = framed.len() - PREFIX;
    if len > max {
        return Err(Status::resource_exhausted(format!(
            "the FlightInfo is {len} bytes, over the {max} bytes a message may have: ask for a narrower time range"
        )));
    }
    Ok(framed)
}

/// A unary request's one message, uncompressed, at most `max` bytes.
async fn decode_request(body: Body, max: usize) -> Result<FlightDescriptor, Status> {
    let mut bytes = Limited::new(body, PREFIX + max)
        .collect()
        .await
        .map_err(|e| match e.downcast::<LengthLimitError>() {
            Ok(_) => {
                Status::resource_exhausted(format!("a GetFlightInfo request over {max} bytes"))
            }
            Err(e) => Status::from_error(e),
        })?
        .to_bytes();
    if bytes.len() < PREFIX {
        return Err(Status::invalid_argument(
            "GetFlightInfo without a whole request message",
        ));
    }
    if bytes.get_u8() != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not supported",
        ));
    }
    if bytes.get_u32() as usize != bytes.len() {
        return Err(Status::invalid_argument(
            "GetFlightInfo takes one request message, of the length its prefix gives",
        ));
    }
    FlightDescriptor::decode(bytes)
        .map_err(|e| Status::invalid_argument(format!("not a FlightDescriptor: {e}")))
}

/// A unary gRPC response: the frame as it is, then the OK status as trailers.
fn respond(answer: Result<Framed, Status>) -> http::Response<Body> {
    let framed = match answer {
        Ok(framed) => framed,
        Err(status) => return status.into_http(),
    };
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = [Frame::data(framed.0), Frame::trailers(trailers)];
    let body = StreamBody::new(futures::stream::iter(frames.map(Ok::<_, Infallible>)));
    let mut response = http::Response::new(Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

impl NamedService for FlightRoutes {
    const NAME: &'static str = <FlightServiceServer<Service> as NamedService>::NAME;
}

impl TowerService<http::Request<Body>> for FlightRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != GET_FLIGHT_INFO {
            return self.generated.call(req);
        }
        let routes = self.clone();
        Box::pin(async move { Ok(respond(routes.get_flight_info(req).await)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn body(bytes: Vec<u8>) -> Body {
        Body::new(Full::new(Bytes::from(bytes)))
    }

    fn descriptor() -> FlightDescriptor {
        FlightDescriptor::new_cmd(r#"{"table":"public.metrics"}"#)
    }

    #[tokio::test]
    async fn a_request_frame_decodes_to_its_descriptor() {
        let framed = Framed::encode(&descriptor());
        assert_eq!(framed.len(), PREFIX + descriptor().encoded_len());
        assert_eq!(framed.message(), descriptor().encode_to_vec());
        let got = decode_request(body(framed.0.to_vec()), 1024).await.unwrap();
        assert_eq!(got, descriptor());
    }

    #[tokio::test]
    async fn bad_request_frames_get_their_status() {
        let whole = Framed::encode(&descriptor()).0.to_vec();
        let code = |bytes: Vec<u8>, max: usize| async move {
            decode_request(body(bytes), max).await.unwrap_err().code()
        };
        assert_eq!(
            code(whole[..3].to_vec(), 1024).await,
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(whole[..whole.len() - 1].to_vec(), 1024).await,
            tonic::Code::InvalidArgument
        );
        let mut compressed = whole.clone();
        compressed[0] = 1;
        assert_eq!(code(compressed, 1024).await, tonic::Code::Unimplemented);
        let mut garbage = vec![0, 0, 0, 0, 3];
        garbage.extend([0xff, 0xff, 0xff]);
        assert_eq!(code(garbage, 1024).await, tonic::Code::InvalidArgument);
        assert_eq!(
            code(whole.clone(), whole.len() - PREFIX - 1).await,
            tonic::Code::ResourceExhausted
        );
    }

    #[test]
    fn a_frame_over_the_limit_is_refused() {
        let framed = Framed::encode(&descriptor());
        let len = framed.len() - PREFIX;
        assert!(within(framed.clone(), len).is_ok());
        let status = within(framed, len - 1).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn the_response_is_the_frame_then_an_ok_status() {
        let framed = Framed::encode(&descriptor());
        let response = respond(Ok(framed.clone()));
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(collected.to_bytes(), framed.0);

        let response = respond(Err(Status::not_found("no such table")));
        assert_eq!(response.headers()["grpc-status"], "5");
        assert_eq!(response.headers()["grpc-message"], "no%20such%20table");
    }
}
