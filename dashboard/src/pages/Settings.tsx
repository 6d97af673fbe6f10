export function Settings() {
  return <p>Settings: to be built.</p>;
}
