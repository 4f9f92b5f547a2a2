/**
 * The cost of evicting the least recently used entry, the way `ResponseCache` does it (a linked list)
 * and the way it did before (a `Map`'s iterator), at a given capacity.
 *
 * `ResponseCache` keeps its entries in a `Map` for lookups and a doubly linked list for the order
 * (evict the head, append at the tail): constant time. Before, it kept the `Map` in recency order and
 * evicted with `entries.delete(entries.keys().next().value)`: V8's `Map` leaves a deleted entry as a
 * hole in its table until the next rehash, and an iterator starts at the table's beginning, so once
 * the cache is full, `keys().next()` walks over every hole left by the previous evictions, up to about
 * the capacity's worth. Both are timed here on the same string keys.
 */

/** Microseconds per insert-and-evict with a full cache of `capacity`. */
export interface EvictionCost {
  readonly capacity: number
  readonly mapIteratorUs: number
  readonly linkedListUs: number
}

/** `Map` in recency order, evicting with `keys().next()` (as `ResponseCache` did before its linked list). */
const timeMapIterator = (capacity: number, operations: number): number => {
  const entries = new Map<string, number>()
  for (let i = 0; i < capacity; i++) entries.set(`key ${i}`, i)
  const started = performance.now()
  for (let i = capacity; i < capacity + operations; i++) {
    entries.set(`key ${i}`, i)
    if (entries.size > capacity) {
      const oldest = entries.keys().next()
      if (!oldest.done) entries.delete(oldest.value)
    }
  }
  return ((performance.now() - started) * 1000) / operations
}

interface Node {
  readonly key: string
  previous: Node | undefined
  next: Node | undefined
}

/** `Map` for lookups and a doubly linked list for recency: evict the head (as `ResponseCache` does). */
const timeLinkedList = (capacity: number, operations: number): number => {
  const index = new Map<string, Node>()
  let head: Node | undefined
  let tail: Node | undefined
  const append = (key: string) => {
    const node: Node = { key, previous: tail, next: undefined }
    if (tail === undefined) head = node
    else tail.next = node
    tail = node
    index.set(key, node)
  }
  for (let i = 0; i < capacity; i++) append(`key ${i}`)
  const started = performance.now()
  for (let i = capacity; i < capacity + operations; i++) {
    append(`key ${i}`)
    if (index.size > capacity && head !== undefined) {
      const oldest = head
      head = oldest.next
      if (head !== undefined) head.previous = undefined
      index.delete(oldest.key)
    }
  }
  return ((performance.now() - started) * 1000) / operations
}

/** Times both evictions at `capacity` over `operations` inserts (after as many to reach a steady state). */
export const measureEviction = (capacity: number, operations: number): EvictionCost => {
  timeMapIterator(capacity, operations)
  timeLinkedList(capacity, operations)
  return {
    capacity,
    mapIteratorUs: timeMapIterator(capacity, operations),
    linkedListUs: timeLinkedList(capacity, operations)
  }
}
