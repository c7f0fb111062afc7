//! Container networks through CNI plugins (being written).
