// The pod sandbox's process for the local node's pause image (no registry to pull one from).
module modelship.io/e2e/images/pause

go 1.26.0
