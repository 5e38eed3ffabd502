"""The balancer: agents register, requests wait in a FIFO buffer and go to free slots."""
