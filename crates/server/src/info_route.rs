//! GetFlightInfo answered with bytes encoded once. A reused plan (see `service::PLAN_REUSE`) is kept
//! as its encoding and goes out as those bytes: cloning and encoding a 10,000-endpoint FlightInfo
//! again took ~2.5 ms of server time per call. tonic's generated server can only encode a
//! `FlightInfo`, so this route takes the GetFlightInfo path before it and hands every other path on;
//! it sits inside the auth interceptor like the generated server did.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::FlightDescriptor;
use bytes::{BufMut, Bytes};
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service as TowerService};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::service::Service;

const GET_FLIGHT_INFO: &str = "/arrow.flight.protocol.FlightService/GetFlightInfo";

/// An encoded message: its encoding is its bytes (only ever sent, never decoded).
#[derive(Debug, Default, Clone)]
pub(crate) struct Encoded(pub Bytes);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
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
        let method = GetFlightInfo(self.service.clone());
        let mut grpc = Grpc::new(ProstCodec::<Encoded, FlightDescriptor>::default())
            .apply_max_message_size_config(Some(self.max_decoding), Some(self.max_encoding));
        Box::pin(async move { Ok(grpc.unary(method, req).await) })
    }
}

struct GetFlightInfo(Arc<Service>);

impl UnaryService<FlightDescriptor> for GetFlightInfo {
    type Response = Encoded;
    type Future = BoxFuture<Response<Encoded>, Status>;

    fn call(&mut self, request: Request<FlightDescriptor>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { Ok(Response::new(service.encoded_info(request).await?)) })
    }
}
