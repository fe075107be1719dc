"""The gRPC door: ``banking.v1`` services, interceptors, server and a small client."""
