"""Support code of the zkfire interop suite: servers, clients, certificates, PostgreSQL."""
