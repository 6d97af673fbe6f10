export function Models() {
  return <p>Models: to be built.</p>;
}
