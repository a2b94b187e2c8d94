"""Delta transfer: chunk indexes of weight layers and assembling a layer from the chunks a
holder already has (docs/delta.md)."""
