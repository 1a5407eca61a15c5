//! Every decoder of stored or received bytes, fed truncated, bit-flipped and random input:
//! an error, never a panic or a huge allocation.
