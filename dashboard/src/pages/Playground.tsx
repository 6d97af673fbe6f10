export function Playground() {
  return <p>Playground: to be built.</p>;
}
