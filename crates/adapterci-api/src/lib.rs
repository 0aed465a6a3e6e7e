//! HTTP wire types of adapterd and a typed client
