//! JWT authentication at the gateway (issue 14; being built).
